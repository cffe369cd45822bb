"""`/v1/recipes`: validated, immutable recipe versions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from service.dependencies import Admin, PageDep, SessionDep, Viewer
from service.errors import problem_responses
from service.limits import INT_MAX
from service.pagination import Page
from service.recipes import service
from service.recipes.schemas import RecipeCreate, RecipeOut, RecipeSummary

router = APIRouter(prefix="/recipes", tags=["recipes"])


@router.post(
    "",
    response_model=RecipeOut,
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {"model": RecipeOut, "description": "The spec equals the latest version: returned as is."},
        **problem_responses(413),
    },
)
def create_recipe(body: RecipeCreate, principal: Admin, session: SessionDep, response: Response) -> RecipeOut:
    """Store a recipe as the next version of its name (or return the latest if the spec is identical)."""
    stored = service.create_recipe(session, name=body.name, spec=body.spec, created_by=principal.token_id)
    if not stored.created:
        response.status_code = status.HTTP_200_OK
    response.headers["Location"] = f"/v1/recipes/{stored.recipe.id}"
    return RecipeOut.model_validate(stored.recipe)


@router.get("", response_model=Page[RecipeSummary])
def list_recipes(
    _: Viewer,
    session: SessionDep,
    page: PageDep,
    name: Annotated[
        str | None, Query(min_length=1, max_length=200, description="Only versions of this name.")
    ] = None,
) -> Page[RecipeSummary]:
    """List recipe versions, newest first."""
    rows, total = service.list_recipes(session, name=name, limit=page.limit, offset=page.offset)
    return Page[RecipeSummary](
        items=[RecipeSummary.model_validate(r) for r in rows],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.get("/{recipe_id}", response_model=RecipeOut, responses=problem_responses(404))
def get_recipe(
    _: Viewer, session: SessionDep, recipe_id: Annotated[int, Path(ge=1, le=INT_MAX)]
) -> RecipeOut:
    """One recipe version with its spec."""
    return RecipeOut.model_validate(service.get_recipe(session, recipe_id))
