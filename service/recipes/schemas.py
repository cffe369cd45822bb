"""Recipe payloads. Read from ORM rows with from_attributes (no ORM import here)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# Printable, no surrounding whitespace: names are shown in tables and typed in commands.
RECIPE_NAME_PATTERN = r"^[^\s\x00-\x1f](?:[^\x00-\x1f]*[^\s\x00-\x1f])?$"


class RecipeCreate(BaseModel):
    """A recipe to store: a name and the recipe document (the YAML/JSON recipe format, as JSON)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, pattern=RECIPE_NAME_PATTERN)
    spec: dict[str, Any] = Field(description="The recipe: seeds, stages (messages, sampling, parser).")


class RecipeSummary(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    version: int = Field(description="1, 2, … per name; a version never changes.")
    digest: str = Field(description="SHA-256 of the canonical JSON of the spec.")
    created_by: int | None
    created_at: datetime


class RecipeOut(RecipeSummary):
    spec: dict[str, Any]
