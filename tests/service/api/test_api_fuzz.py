"""Schemathesis over every operation of the OpenAPI document: generated requests, valid and invalid.

Each operation gets a fixed number of examples per mode (bounded: the whole run takes a couple of
minutes on two cores), and every response must pass the checks below: no server error, a status
code, content type, headers and body the document declares for that operation.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

# Examples per operation and mode: enough to reach each parameter's edges, small enough for CI.
EXAMPLES_PER_OPERATION = 20
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.mark.parametrize("mode", [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE])
def test_every_operation_answers_as_its_schema_says(
    app: FastAPI, admin: dict[str, str], mode: schemathesis.GenerationMode
) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: dict[str, str] = {}
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result.err()  # the document itself is valid
        operations.append(result.ok())
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode, headers=admin))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],  # no shrinking: the report names the request
        )
        def check(case: schemathesis.Case[Any]) -> None:
            response = case.call()
            case.validate_response(response, checks=CHECKS)

        try:
            check()
        except Unsatisfiable:
            assert mode is schemathesis.GenerationMode.NEGATIVE, operation.label  # nothing to negate
        except (Exception, BaseExceptionGroup) as failure:  # collect every operation's, then report all
            failures[operation.label] = str(failure)[:3000]
    assert len(operations) >= 30, [operation.label for operation in operations]
    assert not failures, f"{len(failures)} operations failed:\n\n" + "\n\n".join(
        f"== {label}\n{text}" for label, text in failures.items()
    )
