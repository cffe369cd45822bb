"""The filter types and their parameters, as `hardlabel filter --help` lists them.

Read from the filter spec models (service/filters/specs.py), the same ones the API validates with,
so the help cannot drift from what a run accepts.
"""

from __future__ import annotations

import textwrap
import types
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

WIDTH = 92


def filter_types_help() -> str:
    """Click epilog text: each type with its summary, then one line per parameter."""
    from service.filters.specs import FilterSpec

    paragraphs = ["Filter types and their parameters (TYPE:key=value,...; nested values as JSON):"]
    for spec_model in get_args(get_args(FilterSpec)[0]):
        kind = get_args(spec_model.model_fields["type"].annotation)[0]
        params_model = spec_model.model_fields["params"].annotation
        assert isinstance(params_model, type)
        assert issubclass(params_model, BaseModel)
        summary = " ".join((params_model.__doc__ or "").split("\n\n")[0].split())
        lines = textwrap.wrap(f"{kind}: {summary}", WIDTH, subsequent_indent="    ")
        for name, field in params_model.model_fields.items():
            lines.extend(
                textwrap.wrap(
                    _parameter_line(field.alias or name, field),
                    WIDTH,
                    initial_indent="  ",
                    subsequent_indent="      ",
                )
            )
        # "\b" keeps click from re-wrapping the paragraph.
        paragraphs.append("\b\n" + "\n".join(lines))
    return "\n\n".join(paragraphs)


def _parameter_line(key: str, field: FieldInfo) -> str:
    if field.is_required():
        needed = "required"
    else:
        default = field.get_default(call_default_factory=True)
        needed = f"default {_shown(default)}"
    description = f" {field.description}" if field.description else ""
    return f"{key} ({_type_name(field.annotation)}; {needed}){description}"


def _shown(value: Any) -> str:
    if isinstance(value, BaseModel):
        return "{…}"
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, str) else str(value)


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Literal:
        return "|".join(str(choice) for choice in get_args(annotation))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in get_args(annotation) if arg is not type(None))
    if origin is list:
        return "list"
    if origin is dict:
        return "object"
    if get_args(annotation) and hasattr(annotation, "__metadata__"):  # Annotated[int, Field(...)]
        return _type_name(get_args(annotation)[0])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "object"
    return getattr(annotation, "__name__", str(annotation))
