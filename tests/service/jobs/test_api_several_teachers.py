"""Jobs with several teachers over the API: submission, shards per teacher, estimates, bad input."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.service.api.factories import recipe_spec, teacher

PRICE = {"input": 2.0, "output": 10.0}


def submit(client: TestClient, headers: dict[str, str], **body: Any) -> Any:
    body.setdefault("recipe", recipe_spec(topics=5))
    return client.post("/v1/jobs", json=body, headers=headers)


def field_errors(response: Any) -> list[tuple[str, str]]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    return [(e["field"], e["msg"]) for e in response.json()["errors"]]


def test_each_teacher_gets_every_item_in_shards_of_its_own(
    client: TestClient, admin: dict[str, str], viewer: dict[str, str]
) -> None:
    served = {
        "model": "served-b",
        "engine": "openai",
        "base_url": "http://127.0.0.1:9/v1",
        "api_key_env": "B_KEY",
    }
    response = submit(client, admin, teachers=[teacher(), served], shard_size=2)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["teacher"]["model"] == teacher()["model"]  # the primary: the first
    assert [t["model"] for t in job["teachers"]] == [teacher()["model"], "served-b"]
    assert job["teachers"][1]["api_key_env"] == "B_KEY"
    assert [(s["teacher_index"], s["start"], s["end"]) for s in job["shards"]] == [
        (0, 0, 2),
        (0, 2, 4),
        (0, 4, 5),
        (1, 0, 2),
        (1, 2, 4),
        (1, 4, 5),
    ]
    assert job["progress"]["items_total"] == 10  # 5 items, once per teacher
    usage = job["usage"]
    assert [(t["index"], t["model"], t["samples"]) for t in usage["teachers"]] == [
        (0, teacher()["model"], 0),
        (1, "served-b", 0),
    ]
    assert usage["estimate"]["items"] == 5
    assert usage["estimate"]["requests"] == 10
    events = client.get(f"/v1/jobs/{job['id']}/events", headers=viewer).json()["items"]
    assert "6 shards (2 teachers)" in events[0]["message"]
    answers = client.get(f"/v1/jobs/{job['id']}/answers", headers=viewer).json()
    assert (answers["total"], answers["items"]) == (5, [])  # nothing generated yet


def test_a_priced_estimate_sums_each_teachers_price(client: TestClient, admin: dict[str, str]) -> None:
    cheap, dear = {"input": 1.0, "output": 1.0}, {"input": 2.0, "output": 10.0}
    one = submit(client, admin, teacher=teacher(price_per_million_tokens=cheap)).json()["usage"]["estimate"]
    both = submit(
        client,
        admin,
        teachers=[teacher(price_per_million_tokens=cheap), teacher("tiny", price_per_million_tokens=dear)],
    ).json()
    estimate = both["usage"]["estimate"]
    assert estimate["completion_tokens"] == 2 * one["completion_tokens"]
    expected = (one["prompt_tokens"] * 3 + one["completion_tokens"] * 11) / 1e6
    assert abs(estimate["cost"] - expected) < 1e-12


def test_teacher_or_teachers_is_required_and_not_both(client: TestClient, admin: dict[str, str]) -> None:
    both = submit(client, admin, teacher=teacher(), teachers=[teacher(), teacher()])
    assert field_errors(both) == [("teacher", "give `teacher` (one) or `teachers` (two or more), not both")]
    neither = submit(client, admin)
    assert field_errors(neither) == [
        ("teacher", "give `teacher` (one) or `teachers` (two or more), not both")
    ]
    (single,) = field_errors(submit(client, admin, teachers=[teacher()]))
    assert single[0] == "teachers"
    assert "at least 2" in single[1]
    (many,) = field_errors(submit(client, admin, teachers=[teacher()] * 9))
    assert many[0] == "teachers"
    assert "at most 8" in many[1]


def test_a_bad_second_teacher_is_named_by_its_place(
    client: TestClient, admin: dict[str, str], viewer: dict[str, str]
) -> None:
    before = client.get("/v1/jobs", headers=viewer).json()["total"]
    (missing,) = field_errors(submit(client, admin, teachers=[teacher(), teacher("/no/such/teacher")]))
    assert missing == ("teachers[1].model", "no such model folder: /no/such/teacher")
    (unpriced,) = field_errors(
        submit(
            client,
            admin,
            teachers=[teacher(price_per_million_tokens=PRICE), teacher()],
            budget={"max_cost": 1.0},
        )
    )
    assert unpriced[0] == "budget.max_cost"
    assert "on teachers[1]" in unpriced[1]
    assert client.get("/v1/jobs", headers=viewer).json()["total"] == before  # nothing stored
