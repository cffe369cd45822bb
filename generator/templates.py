"""Prompt templates: Jinja2 in an immutable sandbox, checked statically before anything runs.

Templates come from users (recipes submitted over REST), so they are untrusted code. Three layers:

1. Static refusal at validation: attribute/item access to names starting with `_` (and a few
   known escape hatches such as `mro`, `f_globals`, `format`), the `attr` filter and friends with
   such names, template-loading tags, and names like `cycler`/`self`/`config` that payloads use.
2. Jinja's `ImmutableSandboxedEnvironment` at render time, for anything dynamic the static pass
   cannot see (e.g. a key that comes from seed data).
3. Every render error, sandbox violations included, becomes a `TemplateError`: payloads never run.

Undefined variables are errors (`StrictUndefined`) and are found before running, with the line.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

# Attribute names that lead from an ordinary object to interpreter internals without a leading `_`.
_FORBIDDEN_ATTRIBUTES = frozenset(
    {
        "mro",
        "format",
        "format_map",
        "func_globals",
        "func_code",
        "f_globals",
        "f_locals",
        "f_builtins",
        "f_back",
        "gi_frame",
        "gi_code",
        "cr_frame",
        "cr_code",
        "ag_frame",
        "ag_code",
        "tb_frame",
        "tb_next",
        "co_code",
        "im_func",
        "im_self",
    }
)

# Names template-injection payloads reach for. Refused unless the recipe itself defines the name
# (a seed column called `request` is plain data, not Flask's request object).
_ESCAPE_HATCH_NAMES = frozenset(
    {
        "cycler",
        "joiner",
        "namespace",
        "lipsum",
        "config",
        "request",
        "session",
        "g",
        "url_for",
        "get_flashed_messages",
        "builtins",
        "getattr",
        "setattr",
        "eval",
        "exec",
        "open",
        "globals",
        "locals",
        "vars",
        "os",
        "sys",
        "subprocess",
    }
)

# Names that always mean Jinja internals, whatever the recipe defines.
_ALWAYS_REFUSED_NAMES = frozenset({"self"})

# Filters whose arguments name attributes to look up (`x|attr('__class__')`, `map(attribute=...)`).
_ATTRIBUTE_FILTER_POSITIONAL = {
    "attr": (0,),
    "selectattr": (0,),
    "rejectattr": (0,),
    "groupby": (0,),
    "sum": (0,),
}
_ATTRIBUTE_KEYWORD = "attribute"

# Only the harmless helpers stay global; the rest are escape hatches.
_GLOBALS = ("range", "dict")

TEMPLATE_GLOBALS = frozenset(_GLOBALS)


class TemplateError(ValueError):
    """A template is invalid, refers to an unknown variable, or tried something the sandbox refuses.

    Attributes:
        template: which template, e.g. "stages[0].messages[1]".
        line: 1-based line in that template, when known.
        variable: the variable or attribute concerned, when there is one.
        reason: the problem alone, without location.
    """

    def __init__(self, reason: str, *, template: str, line: int | None = None, variable: str | None = None):
        self.template = template
        self.line = line
        self.variable = variable
        self.reason = reason
        where = template if line is None else f"{template}, line {line}"
        super().__init__(f"{where}: {reason}")


def _new_environment() -> ImmutableSandboxedEnvironment:
    # trim/lstrip blocks: `{% for %}` lines in a YAML block scalar should not leave blank lines.
    environment = ImmutableSandboxedEnvironment(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    for name in list(environment.globals):
        if name not in _GLOBALS:
            del environment.globals[name]
    return environment


_ENVIRONMENT = _new_environment()


@dataclass(frozen=True)
class PromptTemplate:
    """A compiled, checked template. `render` returns the text stripped of surrounding whitespace."""

    name: str
    source: str
    _template: jinja2.Template

    def render(self, context: Mapping[str, Any]) -> str:
        try:
            return self._template.render(context).strip()
        except SecurityError as error:
            raise TemplateError(
                f"refused by the sandbox: {error}", template=self.name, line=_template_line(self, error)
            ) from None
        except jinja2.UndefinedError as error:
            variable = _undefined_name(error)
            reason = f"undefined variable '{variable}'" if variable else str(error)
            raise TemplateError(
                reason, template=self.name, line=_template_line(self, error), variable=variable
            ) from None
        except Exception as error:  # any runtime failure of user code is a template problem
            raise TemplateError(
                f"render failed: {type(error).__name__}: {error}",
                template=self.name,
                line=_template_line(self, error),
            ) from None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()


def compile_template(source: str, *, name: str, variables: Collection[str]) -> PromptTemplate:
    """Parse, check and compile a template.

    Args:
        source: the Jinja2 text.
        name: how errors refer to it, e.g. "stages[1].messages[0]".
        variables: the names a render will provide (seed columns, earlier stage names).

    Raises:
        TemplateError: syntax error, undefined variable, or refused construct (with line numbers).
    """
    try:
        tree = _ENVIRONMENT.parse(source, name=name)
    except jinja2.TemplateSyntaxError as error:
        raise TemplateError(f"syntax error: {error.message}", template=name, line=error.lineno) from None
    known = set(variables)
    _refuse_unsafe_constructs(tree, name=name, known=known)
    _refuse_undefined_variables(tree, name=name, known=known)
    code = _ENVIRONMENT.compile(tree, name=name, filename=_filename(name))
    template = _ENVIRONMENT.template_class.from_code(_ENVIRONMENT, code, _ENVIRONMENT.make_globals(None))
    return PromptTemplate(name=name, source=source, _template=template)


def _filename(name: str) -> str:
    return f"<template {name}>"


def _is_unsafe_attribute(attribute: str) -> bool:
    return attribute.startswith("_") or attribute in _FORBIDDEN_ATTRIBUTES


def _unsafe_attribute_path(value: object) -> str | None:
    """The first unsafe segment of an attribute path such as "a.__class__" (as filters accept)."""
    if not isinstance(value, str):
        return None
    for segment in value.split("."):
        if _is_unsafe_attribute(segment):
            return segment
    return None


def _walk(node: nodes.Node) -> Iterator[nodes.Node]:
    """Children before parents: in `''.__class__.__mro__` the first offence reported is `__class__`."""
    for child in node.iter_child_nodes():
        yield from _walk(child)
    yield node


def _refuse_unsafe_constructs(tree: nodes.Template, *, name: str, known: set[str]) -> None:
    for node in _walk(tree):
        line = getattr(node, "lineno", None)
        if isinstance(node, nodes.Getattr) and _is_unsafe_attribute(node.attr):
            raise TemplateError(
                f"refused: access to attribute '{node.attr}' is not allowed in templates",
                template=name,
                line=line,
                variable=node.attr,
            )
        if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            key = node.arg.value
            if isinstance(key, str) and _is_unsafe_attribute(key):
                raise TemplateError(
                    f"refused: access to item '{key}' is not allowed in templates",
                    template=name,
                    line=line,
                    variable=key,
                )
        if (
            isinstance(node, nodes.Name)
            and node.ctx == "load"
            and (
                node.name in _ALWAYS_REFUSED_NAMES
                or node.name.startswith("_")
                or (node.name in _ESCAPE_HATCH_NAMES and node.name not in known)
            )
        ):
            raise TemplateError(
                f"refused: '{node.name}' is not available in templates",
                template=name,
                line=line,
                variable=node.name,
            )
        if isinstance(node, nodes.Filter | nodes.Test):
            _refuse_attribute_arguments(node, name=name)
        if isinstance(node, nodes.Extends | nodes.Include | nodes.Import | nodes.FromImport):
            raise TemplateError(
                f"refused: '{type(node).__name__.lower()}' tags are not supported in recipe templates",
                template=name,
                line=line,
            )


def _refuse_attribute_arguments(node: nodes.Filter | nodes.Test, *, name: str) -> None:
    suspects: list[nodes.Expr] = [kw.value for kw in node.kwargs if kw.key == _ATTRIBUTE_KEYWORD]
    suspects += [node.args[i] for i in _ATTRIBUTE_FILTER_POSITIONAL.get(node.name, ()) if i < len(node.args)]
    if node.name == "map":  # map('attr', '__class__') applies the attr filter
        suspects += list(node.args)
    for expression in suspects:
        if isinstance(expression, nodes.Const):
            unsafe = _unsafe_attribute_path(expression.value)
            if unsafe is not None:
                raise TemplateError(
                    f"refused: filter '{node.name}' may not look up attribute '{unsafe}'",
                    template=name,
                    line=node.lineno,
                    variable=unsafe,
                )


def _refuse_undefined_variables(tree: nodes.Template, *, name: str, known: set[str]) -> None:
    undefined = meta.find_undeclared_variables(tree) - known - TEMPLATE_GLOBALS
    if not undefined:
        return
    first_line: dict[str, int] = {}
    for node in _walk(tree):
        if isinstance(node, nodes.Name) and node.name in undefined:
            first_line.setdefault(node.name, node.lineno)
    variable = min(sorted(undefined), key=lambda v: first_line.get(v, 0))
    available = ", ".join(sorted(known)) or "none"
    others = sorted(undefined - {variable})
    more = f"; also undefined: {', '.join(others)}" if others else ""
    raise TemplateError(
        f"undefined variable '{variable}' (available: {available}){more}",
        template=name,
        line=first_line.get(variable),
        variable=variable,
    )


def _undefined_name(error: jinja2.UndefinedError) -> str | None:
    # StrictUndefined messages read "'name' is undefined" or "'dict object' has no attribute 'x'".
    message = str(error)
    if message.endswith(" is undefined") and message.startswith("'"):
        return message[1 : message.index("'", 1)]
    marker = "has no attribute '"
    if marker in message:
        start = message.index(marker) + len(marker)
        return message[start : message.index("'", start)]
    return None


def _template_line(template: PromptTemplate, error: BaseException) -> int | None:
    # Jinja rewrites tracebacks so that frames of the template carry template line numbers.
    filename = _filename(template.name)
    line: int | None = None
    traceback: TracebackType | None = error.__traceback__
    while traceback is not None:
        if traceback.tb_frame.f_code.co_filename == filename:
            line = traceback.tb_lineno
        traceback = traceback.tb_next
    return line
