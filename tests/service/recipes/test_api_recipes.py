"""Recipes: validated with the generator, immutable versions per name, problem details on errors."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.service.api.factories import recipe_spec, unique_name


def create(client: TestClient, headers: dict[str, str], name: str, spec: dict[str, Any]) -> Any:
    return client.post("/v1/recipes", json={"name": name, "spec": spec}, headers=headers)


def test_versions_are_immutable_and_identical_specs_are_not_duplicated(
    client: TestClient, admin: dict[str, str], viewer: dict[str, str]
) -> None:
    name = unique_name("self-instruct")
    spec = recipe_spec()
    first = create(client, admin, name, spec)
    assert first.status_code == 201, first.text
    assert first.headers["location"] == f"/v1/recipes/{first.json()['id']}"
    assert first.json()["version"] == 1
    assert first.json()["spec"] == spec

    again = create(client, admin, name, dict(reversed(list(spec.items()))))  # same content, other key order
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]

    changed = create(client, admin, name, recipe_spec(topics=7))
    assert changed.status_code == 201
    assert changed.json()["version"] == 2
    assert changed.json()["digest"] != first.json()["digest"]

    # Going back to the first spec is a new version (versions never change or disappear).
    back = create(client, admin, name, spec)
    assert back.status_code == 201
    assert back.json()["version"] == 3

    listed = client.get("/v1/recipes", params={"name": name}, headers=viewer).json()
    assert listed["total"] == 3
    assert listed["offset"] == 0
    assert [r["version"] for r in listed["items"]] == [3, 2, 1]
    assert "spec" not in listed["items"][0]
    one = client.get(f"/v1/recipes/{changed.json()['id']}", headers=viewer).json()
    assert one["spec"]["seeds"]["values"]["topic"][-1] == "topic 6"

    page = client.get("/v1/recipes", params={"name": name, "limit": 2, "offset": 2}, headers=viewer).json()
    assert [r["version"] for r in page["items"]] == [1]
    assert page["limit"] == 2


def test_unknown_recipe_is_404(client: TestClient, viewer: dict[str, str]) -> None:
    response = client.get("/v1/recipes/2000000000", headers=viewer)
    assert response.status_code == 404
    assert response.json()["title"] == "Not Found"


def _with(spec: dict[str, Any], path: list[Any], value: Any) -> dict[str, Any]:
    target: Any = spec
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return spec


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (["stages", 0, "sampling", "temperature"], -1, "spec.stages[0].sampling.temperature"),
        (["stages", 0, "sampling", "tempurature"], 1, "spec.stages[0].sampling.tempurature"),
        (["stages", 0, "messages", 0, "role"], "robot", "spec.stages[0].messages[0].role"),
        (["stages", 0, "parser"], {"type": "list", "max_itemz": 3}, "spec.stages[0].parser.max_itemz"),
        (["seeds"], {}, "spec.seeds"),
        (["stages", 0, "judges"], "nothing", "spec.stages[0].judges"),
    ],
)
def test_invalid_spec_is_422_with_the_path_inside_spec(
    client: TestClient, admin: dict[str, str], path: list[Any], value: Any, field: str
) -> None:
    response = create(client, admin, unique_name(), _with(recipe_spec(), path, value))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"].endswith("invalid-recipe")
    assert field in [error["field"] for error in problem["errors"]], problem


def test_template_error_names_template_line_and_variable(client: TestClient, admin: dict[str, str]) -> None:
    spec = recipe_spec(content="Topic:\n{{ topci }} please")
    response = create(client, admin, unique_name(), spec)
    assert response.status_code == 422
    problem = response.json()
    assert problem["type"].endswith("template-error")
    assert (problem["template"], problem["line"], problem["variable"]) == (
        "stages[0].messages[0]",
        2,
        "topci",
    )
    (error,) = problem["errors"]
    assert error["field"] == "spec.stages[0].messages[0].content"
    assert (error["template"], error["line"], error["variable"]) == ("stages[0].messages[0]", 2, "topci")
    assert "topci" in problem["detail"]
    assert "line 2" in problem["detail"]


@pytest.mark.parametrize(
    "payload", ["{{ ''.__class__.__mro__ }}", "{{ cycler.__init__.__globals__ }}", "{% include 'x' %}"]
)
def test_template_injection_is_refused(client: TestClient, admin: dict[str, str], payload: str) -> None:
    response = create(client, admin, unique_name(), recipe_spec(content=payload))
    assert response.status_code == 422
    assert "refused" in response.json()["detail"]


def test_template_syntax_error_has_its_line(client: TestClient, admin: dict[str, str]) -> None:
    response = create(client, admin, unique_name(), recipe_spec(content="a\nb\n{{ topic "))
    assert response.status_code == 422
    assert response.json()["line"] == 3


def test_missing_seed_file_is_422_on_the_seeds_path(client: TestClient, admin: dict[str, str]) -> None:
    spec = recipe_spec()
    spec["seeds"] = {"path": "/nonexistent/seeds.jsonl"}
    response = create(client, admin, unique_name(), spec)
    assert response.status_code == 422
    problem = response.json()
    assert problem["errors"][0]["field"] == "spec.seeds.path"
    assert "not found" in problem["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"spec": {}}, "name"),
        ({"name": "x"}, "spec"),
        ({"name": "", "spec": {}}, "name"),
        ({"name": " padded ", "spec": {}}, "name"),
        ({"name": "x", "spec": []}, "spec"),
        ({"name": "x", "spec": {}, "extra": 1}, "extra"),
    ],
)
def test_bad_envelope_is_422(
    client: TestClient, admin: dict[str, str], body: dict[str, Any], field: str
) -> None:
    response = client.post("/v1/recipes", json=body, headers=admin)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == field


def test_concurrent_versions_of_one_name_get_distinct_numbers(app: FastAPI, admin: dict[str, str]) -> None:
    name = unique_name("race")
    codes: list[int] = []

    def post(topics: int) -> None:
        with TestClient(app) as own_client:
            codes.append(create(own_client, admin, name, recipe_spec(topics=topics)).status_code)

    threads = [threading.Thread(target=post, args=(topics,)) for topics in range(1, 6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert codes == [201] * 5
    with TestClient(app) as client:
        listed = client.get("/v1/recipes", params={"name": name}, headers=admin).json()
    assert sorted(r["version"] for r in listed["items"]) == [1, 2, 3, 4, 5]
