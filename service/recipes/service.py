"""Recipes: validation with the generator library, and immutable versions per name.

The API process imports only the light, pure generator modules (recipe model, templates, seeds);
never engines or the pipeline (an import-linter contract holds this).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pydantic
from sqlalchemy.orm import Session

from generator.parsers import PARSER_TYPES
from generator.recipe import Recipe as RecipeSpec
from generator.recipe import RecipeError, describe_validation_error, validate_recipe
from generator.seeds import load_seed_rows
from generator.templates import TemplateError
from service.canonical import canonical_digest
from service.db.models import Recipe
from service.errors import NotFoundError, ValidationProblem, field_error
from service.recipes import repository

Loc = tuple[str | int, ...]
# "stages[1].judges: 'x' is not an earlier stage": generator messages that start with a path.
_PATH_PREFIX = re.compile(r"^(?:Value error, )?([A-Za-z_][\w]*(?:\[\d+\]|\.[A-Za-z_]\w*)*): (.+)$", re.DOTALL)
_PATH_PART = re.compile(r"([A-Za-z_]\w*)|\[(\d+)\]")


@dataclass(frozen=True)
class StoredRecipe:
    """A recipe version and whether this call created it (False: an identical latest version existed)."""

    recipe: Recipe
    created: bool


def path_parts(path: str) -> list[str | int]:
    """`"stages[0].messages[1]"` → `["stages", 0, "messages", 1]`."""
    return [name if name else int(index) for name, index in _PATH_PART.findall(path)]


def _split_message(loc: Sequence[str | int], message: str) -> tuple[list[str | int], str]:
    """Move a path the generator put at the start of a message into the location."""
    match = _PATH_PREFIX.match(message)
    if match is None:
        return list(loc), message
    path, reason = match.groups()
    return [*loc, *path_parts(path)], reason


def _pydantic_errors(exc: pydantic.ValidationError, loc: Loc) -> list[dict[str, Any]]:
    errors = []
    for error in exc.errors():
        # Discriminated parsers put their tag ("list", "json", …) after "parser": not a key of the spec.
        parts = [
            part
            for position, part in enumerate(error["loc"])
            if not (position > 0 and error["loc"][position - 1] == "parser" and part in PARSER_TYPES)
        ]
        where, msg = _split_message([*loc, *parts], str(error["msg"]))
        errors.append(field_error(where, msg, type=error["type"]))
    return errors


def parse_spec(spec: dict[str, Any], loc: Loc) -> RecipeSpec:
    """Validate a recipe document with the generator; a 422 naming the field (under `loc`) if bad.

    Schema problems carry their path inside the spec; template problems the template, line and
    variable; seed problems (unreadable files, column clashes) the generator's one-line reason.
    """
    try:
        recipe = RecipeSpec.model_validate(spec)
    except pydantic.ValidationError as exc:
        raise ValidationProblem(
            describe_validation_error(exc),
            title="Invalid Recipe",
            slug="invalid-recipe",
            errors=_pydantic_errors(exc, loc),
        ) from exc
    try:
        validate_recipe(recipe)
    except TemplateError as exc:
        raise template_problem(exc, loc) from exc
    except RecipeError as exc:
        raise recipe_problem(exc, loc) from exc
    return recipe


def recipe_problem(exc: RecipeError, loc: Loc) -> ValidationProblem:
    where, reason = _split_message(loc, str(exc))
    return ValidationProblem(
        str(exc), title="Invalid Recipe", slug="invalid-recipe", errors=[field_error(where, reason)]
    )


def template_problem(exc: TemplateError, loc: Loc) -> ValidationProblem:
    """A 422 naming the template (its path inside the spec), the line and the variable."""
    where: list[str | int] = [*loc, *path_parts(exc.template)]
    if where and where[-2:-1] == ["messages"]:
        where.append("content")
    return ValidationProblem(
        str(exc),
        title="Template Error",
        slug="template-error",
        errors=[field_error(where, exc.reason, template=exc.template, line=exc.line, variable=exc.variable)],
        template=exc.template,
        line=exc.line,
        variable=exc.variable,
    )


def count_items(recipe: RecipeSpec, loc: Loc) -> int:
    """How many seed items the recipe expands to (each becomes one item of a job)."""
    try:
        return len(load_seed_rows(recipe))
    except RecipeError as exc:
        raise recipe_problem(exc, loc) from exc


def spec_digest(spec: dict[str, Any], loc: Loc) -> str:
    try:
        return canonical_digest(spec)
    except ValueError as exc:  # NaN / Infinity: Python's json reads them, JSON has no such numbers
        raise ValidationProblem.at(loc, f"not representable as JSON: {exc}") from exc


def store_recipe(
    session: Session, *, name: str, spec: dict[str, Any], created_by: int | None
) -> StoredRecipe:
    """Store `spec` as the next version of `name`, unless it equals the latest version (returned as is).

    The spec must already be validated (parse_spec).
    """
    digest = spec_digest(spec, ("body", "spec"))
    repository.lock_name(session, name)
    latest = repository.latest_version(session, name)
    if latest is not None and latest.digest == digest:
        return StoredRecipe(latest, created=False)
    version = latest.version + 1 if latest is not None else 1
    recipe = repository.add_recipe(
        session, name=name, version=version, spec=spec, digest=digest, created_by=created_by
    )
    return StoredRecipe(recipe, created=True)


def create_recipe(
    session: Session, *, name: str, spec: dict[str, Any], created_by: int | None
) -> StoredRecipe:
    parse_spec(spec, ("body", "spec"))
    return store_recipe(session, name=name, spec=spec, created_by=created_by)


def get_recipe(session: Session, recipe_id: int) -> Recipe:
    recipe = repository.get_recipe(session, recipe_id)
    if recipe is None:
        raise NotFoundError(f"recipe {recipe_id} does not exist")
    return recipe


def recipe_by_id(session: Session, recipe_id: int, *, loc: Sequence[str | int]) -> Recipe:
    """A stored version referenced from a request body; a 422 on `loc` when there is none."""
    recipe = repository.get_recipe(session, recipe_id)
    if recipe is None:
        raise ValidationProblem.at(loc, f"recipe {recipe_id} does not exist")
    return recipe


def find_recipe(session: Session, *, name: str, version: int | None, loc: Sequence[str | int]) -> Recipe:
    """A stored version by name (latest when `version` is None); a 422 on `loc` when there is none."""
    recipe = (
        repository.latest_version(session, name)
        if version is None
        else repository.get_version(session, name, version)
    )
    if recipe is None:
        what = f"recipe {name!r}" + (f" version {version}" if version is not None else "")
        raise ValidationProblem.at(loc, f"{what} does not exist")
    return recipe


def list_recipes(session: Session, *, name: str | None, limit: int, offset: int) -> tuple[list[Recipe], int]:
    return repository.list_recipes(session, name=name, limit=limit, offset=offset)
