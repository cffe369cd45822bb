"""The error a user sees when a recipe (or its seed data) is wrong."""

from __future__ import annotations


class RecipeError(ValueError):
    """A recipe or its seed data is invalid. `str()` is one human line naming the field and reason."""
