"""Fuzz smoke over the OpenAPI schema: generated requests, valid and invalid, never get a 500."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings

# Enough to reach every operation several times in each mode, small enough to stay a smoke test.
EXAMPLES = 100


@pytest.mark.parametrize("mode", [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE])
def test_generated_requests_never_get_a_server_error(
    app: FastAPI, admin: dict[str, str], mode: schemathesis.GenerationMode
) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    seen: set[str] = set()

    @given(case=schema.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def check(case: schemathesis.Case[Any]) -> None:
        response = case.call(headers={**dict(case.headers or {}), **admin})
        seen.add(f"{case.method} {case.path}")
        assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text[:500]}"
        if response.status_code >= 400:
            content_type = response.headers.get("content-type") or [""]
            assert content_type[0] == "application/problem+json", response.text[:200]

    check()
    assert len(seen) >= 8, seen  # the strategy reached (nearly) every operation
