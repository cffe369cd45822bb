"""The app as a whole: problem+json for every error, metrics, OpenAPI, and what the API imports."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert

from service.app import create_app
from service.db.models import Worker
from service.db.session import transaction
from service.settings import Settings
from tests.service.api.factories import insert_samples, make_job, sample_row

ROOT = Path(__file__).resolve().parents[3]


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_report_jobs_tasks_samples_tokens_and_worker_heartbeats(
    client: TestClient, viewer: dict[str, str], database_url: str
) -> None:
    worker_id = f"w-{uuid.uuid4().hex[:8]}"
    with transaction(database_url) as session:
        job = make_job(session, status="running")
        job_id = job.id
        session.execute(insert(Worker).values(id=worker_id, hostname="gpu-7", pid=4242, kinds=["generate"]))
    insert_samples(database_url, [sample_row(job_id, i) for i in range(3)])
    response = client.get("/metrics", headers=viewer)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    values = metric_samples(response.text)
    assert values[("hardlabel_jobs", (("status", "running"),))] >= 1
    assert ("hardlabel_jobs", (("status", "failed"),)) in values  # every status is reported, zeros too
    assert ("hardlabel_tasks", (("kind", "generate"), ("status", "queued"))) in values
    assert values[("hardlabel_samples_total", ())] >= 3
    assert values[("hardlabel_api_tokens", (("role", "viewer"), ("state", "active")))] >= 1
    age = values[("hardlabel_worker_heartbeat_age_seconds", (("hostname", "gpu-7"), ("worker", worker_id)))]
    assert 0 <= age < 3600
    assert values[("hardlabel_workers", ())] >= 1
    assert ("hardlabel_teacher_tokens_total", (("direction", "out"),)) in values
    # The scrape itself is counted by route template, not raw path.
    client.get("/v1/jobs/123456789", headers=viewer)
    values = metric_samples(client.get("/metrics", headers=viewer).text)
    assert (
        values[
            (
                "hardlabel_http_requests_total",
                (("method", "GET"), ("route", "/v1/jobs/{job_id}"), ("status", "404")),
            )
        ]
        >= 1
    )


def test_unknown_route_and_method_are_problems(client: TestClient, viewer: dict[str, str]) -> None:
    missing = client.get("/v1/nothing-here", headers=viewer)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["instance"] == "/v1/nothing-here"
    wrong_method = client.delete("/v1/jobs", headers=viewer)
    assert wrong_method.status_code == 405
    assert wrong_method.json()["status"] == 405


def test_unexpected_error_is_a_500_problem_without_traceback(database_url: str) -> None:
    app = create_app(Settings(database_url=database_url))

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret internals")

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["title"] == "Internal Server Error"
    assert problem["instance"] == "/boom"
    assert "secret internals" not in response.text
    assert "Traceback" not in response.text


def test_nul_bytes_are_a_422_not_a_database_error(client: TestClient, viewer: dict[str, str]) -> None:
    response = client.get("/v1/recipes", params={"name": "bad\x00name"}, headers=viewer)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


def test_readyz_reports_an_unreachable_database() -> None:
    app = create_app(Settings(database_url="postgresql+psycopg://postgres@127.0.0.1:1/nowhere"))
    client = TestClient(app, raise_server_exceptions=False)  # no lifespan: it would refuse to start
    assert client.get("/healthz").status_code == 200
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["type"].endswith("database-unavailable")


def test_openapi_documents_every_route_with_bearer_auth(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    expected = {
        ("post", "/v1/recipes"),
        ("get", "/v1/recipes"),
        ("get", "/v1/recipes/{recipe_id}"),
        ("post", "/v1/jobs"),
        ("get", "/v1/jobs"),
        ("get", "/v1/jobs/{job_id}"),
        ("post", "/v1/jobs/{job_id}/cancel"),
        ("get", "/v1/jobs/{job_id}/events"),
        ("get", "/v1/samples"),
        ("get", "/v1/samples/{sample_id}"),
        ("get", "/metrics"),
    }
    documented = {(method, path) for path, item in schema["paths"].items() for method in item}
    assert expected <= documented
    for method, path in expected:
        operation = schema["paths"][path][method]
        assert operation["security"] == [{"HTTPBearer": []}], path
        assert operation.get("summary"), path
        assert operation.get("description"), path
    for path in ("/healthz", "/readyz"):
        assert "security" not in schema["paths"][path]["get"]
    job_params = {p["name"] for p in schema["paths"]["/v1/samples"]["get"]["parameters"]}
    assert {"job_id", "stage", "parse_status", "q", "cursor", "limit"} <= job_params


def test_the_api_process_never_imports_heavy_ml_libraries() -> None:
    code = (
        "import sys\n"
        "from service.app import create_app\n"
        "from service.settings import Settings\n"
        "create_app(Settings(database_url='postgresql+psycopg://u@127.0.0.1:1/x'))\n"
        "heavy = sorted(m for m in ('vllm', 'torch', 'trl', 'transformers', 'generator.pipeline')"
        " if m in sys.modules)\n"
        # Only the trainer's pure-pydantic modules: the API validates hyper-parameters with them.
        "heavy += sorted(m for m in sys.modules if m.startswith('trainer.')"
        " and m not in ('trainer.spec', 'trainer.schedule'))\n"
        "print(heavy)\n"
        "sys.exit(1 if heavy else 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_openapi_documents_errors_as_problem_json(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    assert "HTTPValidationError" not in components
    assert {"Problem", "ValidationProblemOut", "FieldErrorOut"} <= set(components)
    submit = schema["paths"]["/v1/jobs"]["post"]["responses"]
    assert set(submit) >= {"202", "200", "401", "403", "409", "413", "422"}
    assert submit["422"]["content"] == {
        "application/problem+json": {"schema": {"$ref": "#/components/schemas/ValidationProblemOut"}}
    }
    assert schema["paths"]["/v1/jobs/{job_id}"]["get"]["responses"]["404"]["content"] == {
        "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
    }
    for path_item in schema["paths"].values():
        for operation in path_item.values():
            for code, response in operation["responses"].items():
                if int(code) >= 400:
                    assert list(response["content"]) == ["application/problem+json"]
