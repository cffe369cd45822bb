"""Jobs: token and cost accounting (estimate at submission, actual cost when read) and budgets."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from service.db.models import Job
from service.db.session import transaction
from tests.service.api.factories import recipe_spec, teacher

PRICE = {"input": 2.0, "output": 10.0}


def submit(client: TestClient, headers: dict[str, str], **body: Any) -> Any:
    body.setdefault("recipe", recipe_spec())
    body.setdefault("teacher", teacher())
    return client.post("/v1/jobs", json=body, headers=headers)


def three_stage_recipe() -> dict[str, Any]:
    """Questions as a list of at most 3, two answers per question, a judge of each answer."""
    spec = recipe_spec(topics=4)
    spec["stages"] = [
        {
            "name": "questions",
            "messages": [{"role": "user", "content": "Write questions about {{ topic }}."}],
            "sampling": {"max_tokens": 50},
            "parser": {"type": "list", "max_items": 3},
        },
        {
            "name": "answer",
            "messages": [{"role": "user", "content": "{{ questions }}"}],
            "sampling": {"max_tokens": 20, "n": 2},
        },
        {
            "name": "judge",
            "judges": "answer",
            "messages": [{"role": "user", "content": "Q: {{ questions }} A: {{ answer }} Score 1-10:"}],
            "sampling": {"max_tokens": 4},
            "parser": {"type": "score", "min": 1, "max": 10},
        },
    ]
    spec["answer_stage"] = "answer"
    return spec


def test_the_estimate_bounds_completion_tokens_over_every_stage_and_prices_them(
    client: TestClient, admin: dict[str, str], viewer: dict[str, str]
) -> None:
    response = submit(
        client, admin, recipe=three_stage_recipe(), teacher=teacher(price_per_million_tokens=PRICE)
    )
    assert response.status_code == 202, response.text
    job = response.json()
    estimate = job["usage"]["estimate"]
    # Per item: 1 x 50 (questions) + 3 branches x 2 x 20 (answers) + 6 branches x 1 x 4 (judges).
    assert estimate["completion_tokens"] == 4 * (50 + 3 * 2 * 20 + 6 * 4)
    assert estimate["requests"] == 4 * (1 + 3 + 6)
    assert estimate["completion_tokens_bounded"] is True
    assert estimate["items"] == 4
    assert estimate["prompt_tokens"] > 0
    assert estimate["cost"] == pytest.approx(
        (estimate["prompt_tokens"] * 2.0 + estimate["completion_tokens"] * 10.0) / 1e6
    )
    assert "estimate" not in job["params"]
    assert job["teacher"]["price_per_million_tokens"] == PRICE
    again = client.get(f"/v1/jobs/{job['id']}", headers=viewer).json()
    assert again["usage"]["estimate"] == estimate
    assert again["usage"]["total"]["cost"] == 0.0
    assert again["usage"]["budget"] is None


def test_an_unbounded_list_stage_and_an_unpriced_teacher_say_so(
    client: TestClient, admin: dict[str, str]
) -> None:
    spec = three_stage_recipe()
    del spec["stages"][0]["parser"]["max_items"]
    job = submit(client, admin, recipe=spec).json()
    estimate = job["usage"]["estimate"]
    assert estimate["completion_tokens_bounded"] is False
    assert estimate["completion_tokens"] == 4 * (50 + 2 * 20 + 2 * 4)  # one list entry counted
    assert estimate["cost"] is None
    assert job["usage"]["teachers"][0]["cost"] is None
    assert job["usage"]["teachers"][0]["price_per_million_tokens"] is None


def test_actual_cost_is_computed_from_the_job_counters_when_read(
    client: TestClient, admin: dict[str, str], viewer: dict[str, str]
) -> None:
    job = submit(
        client,
        admin,
        teacher=teacher(price_per_million_tokens=PRICE),
        budget={"max_cost": 1.0, "max_completion_tokens": 5000},
    ).json()
    assert job["params"]["budget"] == {"max_cost": 1.0, "max_completion_tokens": 5000}
    with transaction(client.app.state.settings.database_url) as session:  # type: ignore[attr-defined]
        session.execute(
            update(Job)
            .where(Job.id == job["id"])
            .values(status="running", tokens_in=300_000, tokens_out=40_000, samples_written=12, items_done=3)
        )
    usage = client.get(f"/v1/jobs/{job['id']}", headers=viewer).json()["usage"]
    (one,) = usage["teachers"]
    assert one["model"] == job["teacher"]["model"]
    assert (one["prompt_tokens"], one["completion_tokens"], one["samples"]) == (300_000, 40_000, 12)
    assert one["cost"] == pytest.approx(300_000 * 2.0 / 1e6 + 40_000 * 10.0 / 1e6)  # 0.6 + 0.4
    assert usage["total"]["cost"] == pytest.approx(1.0)
    assert usage["budget"]["reached"] == "completion tokens 40000 >= max_completion_tokens 5000"
    listed = client.get("/v1/jobs", headers=viewer).json()["items"]
    assert next(j for j in listed if j["id"] == job["id"])["usage"]["total"]["cost"] == pytest.approx(1.0)


def test_a_cost_budget_needs_a_price(client: TestClient, admin: dict[str, str]) -> None:
    response = submit(client, admin, budget={"max_cost": 5})
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "budget.max_cost"
    tokens_only = submit(client, admin, budget={"max_completion_tokens": 100})
    assert tokens_only.status_code == 202, tokens_only.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"budget": {}}, "budget"),
        ({"budget": {"max_cost": -1}}, "budget.max_cost"),
        ({"budget": {"max_completion_tokens": 0}}, "budget.max_completion_tokens"),
        ({"teacher": {"model": "m", "price_per_million_tokens": {"input": -1, "output": 1}}}, None),
        ({"teacher": {"model": "m", "price_per_million_tokens": {"input": 1}}}, None),
    ],
)
def test_bad_budgets_and_prices_are_422(
    client: TestClient, admin: dict[str, str], body: dict[str, Any], field: str | None
) -> None:
    response = submit(client, admin, **body)
    assert response.status_code == 422, response.text
    fields = [e["field"] for e in response.json()["errors"]]
    if field is not None:
        assert fields[0] == field
    else:
        assert fields[0].startswith("teacher.price_per_million_tokens")


def test_the_estimate_bounds_the_soft_label_bytes_of_stages_that_ask_for_logprobs(
    client: TestClient, admin: dict[str, str]
) -> None:
    plain = submit(client, admin).json()["usage"]["estimate"]
    assert plain["soft_label_bytes"] == 0
    spec = recipe_spec(topics=4)
    spec["stages"][0]["sampling"] = {"max_tokens": 10, "n": 2, "logprobs": 5}
    response = submit(client, admin, recipe=spec)
    assert response.status_code == 202, response.text
    # 4 items x 2 completions x (8-byte header + 10 tokens x (4-byte id + 5 x 6-byte pairs)).
    assert response.json()["usage"]["estimate"]["soft_label_bytes"] == 4 * 2 * (8 + 10 * (4 + 5 * 6))
