"""Prompt templates: Jinja2 in an immutable sandbox, checked statically before anything runs.

Templates come from users (recipes submitted over REST), so they are untrusted code. Four layers:

1. Static refusal at validation: attribute/item access to names starting with `_` (and a few
   known escape hatches such as `mro`, `f_globals`, `format`), the `attr` filter and friends with
   such names, template-loading tags, and names like `cycler`/`self`/`config` that payloads use.
2. Jinja's `ImmutableSandboxedEnvironment` at render time, for anything dynamic the static pass
   cannot see (e.g. a key that comes from seed data).
3. Bounded work: validation never evaluates an expression (Jinja's compile-time constant folding
   is off, so `{{ 'a' * 10**9 }}` costs nothing to check), and every render runs under
   `RenderLimits` — output size, size of every value it makes, steps and wall time. Operators
   and calls that could make something huge (`*`, `**`, `+`, `%`, `~`, `join`, `replace`,
   `center`, …) are refused *before* they run when their result would be too large.
4. Every render error, sandbox violations and limits included, becomes a `TemplateError`:
   payloads never run.

Undefined variables are errors (`StrictUndefined`) and are found before running, with the line.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import re
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import BuiltinFunctionType, BuiltinMethodType, TracebackType
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
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


# Bounds of one render. Prompts are rarely over a few thousand characters; 100,000 leaves room
# for long documents while keeping a runaway template far from the memory of a worker or the API.
DEFAULT_MAX_RENDERED_CHARS = 100_000
# Loop iterations, calls, filters, operators and lookups; an ordinary prompt takes a few dozen.
DEFAULT_MAX_RENDER_STEPS = 1_000_000
DEFAULT_MAX_RENDER_SECONDS = 2.0
_STEPS_PER_CLOCK_CHECK = 32
# Text produced while rendering, captured blocks (`{% set %}…{% endset %}`, macros) included,
# may be this many times the output limit (captured text is usually output again).
_PRODUCED_TEXT_FACTOR = 4
# Integers beyond this many bits come only from templates that compute for the sake of it.
MAX_INTEGER_BITS = 16_384
_SIZED = (str, bytes, list, tuple, dict, set, frozenset)


@dataclass(frozen=True)
class RenderLimits:
    """What one render may use. Untrusted templates must not run away with memory or time.

    Attributes:
        max_chars: the most characters a render may return; also bounds every value made while
            rendering (a string, list, joined or repeated text).
        max_steps: loop iterations, calls, filters, operators and lookups of one render.
        max_seconds: wall-clock time of one render (a backstop for a few slow steps).
    """

    max_chars: int = DEFAULT_MAX_RENDERED_CHARS
    max_steps: int = DEFAULT_MAX_RENDER_STEPS
    max_seconds: float = DEFAULT_MAX_RENDER_SECONDS


class RenderLimitExceeded(Exception):
    """A render would pass its `RenderLimits`.

    Deliberately not a TypeError/LookupError/ValueError: the sandbox and filters catch those.
    """


@dataclass
class _RenderBudget:
    limits: RenderLimits
    deadline: float = field(init=False)
    steps: int = 0
    produced: int = 0

    def __post_init__(self) -> None:
        self.deadline = time.monotonic() + self.limits.max_seconds

    def step(self) -> None:
        self.steps += 1
        if self.steps > self.limits.max_steps:
            raise RenderLimitExceeded(f"rendering takes more than {self.limits.max_steps} steps")
        # Every step is bounded in size, so looking at the clock now and then is enough.
        if self.steps % _STEPS_PER_CLOCK_CHECK == 0 and time.monotonic() > self.deadline:
            raise RenderLimitExceeded(f"rendering takes longer than {self.limits.max_seconds:g} s")

    def allow_size(self, size: int, what: str = "a value") -> None:
        if size > self.limits.max_chars:
            raise RenderLimitExceeded(
                f"{what} would be at least {size} characters long; "
                f"the limit is {self.limits.max_chars} characters"
            )

    def allow_value(self, value: object) -> None:
        if isinstance(value, _SIZED):
            self.allow_size(len(value))
        elif isinstance(value, int) and value.bit_length() > MAX_INTEGER_BITS:
            raise RenderLimitExceeded(f"an integer would have more than {MAX_INTEGER_BITS} bits")

    def produce(self, text: str) -> str:
        # Not a step: outputs repeat only inside loops and calls, which count their own.
        self.allow_size(len(text), "an output")
        self.produced += len(text)
        if self.produced > _PRODUCED_TEXT_FACTOR * self.limits.max_chars:
            raise RenderLimitExceeded(
                f"rendering produces more than {_PRODUCED_TEXT_FACTOR * self.limits.max_chars} "
                f"characters of text; the limit is {self.limits.max_chars} characters"
            )
        return text


_CURRENT_BUDGET: ContextVar[_RenderBudget | None] = ContextVar("render_budget", default=None)


def _budget() -> _RenderBudget:
    # PromptTemplate.render sets it; anything rendering otherwise still gets per-operation bounds.
    return _CURRENT_BUDGET.get() or _RenderBudget(RenderLimits())


# -- what an operation would make, computed before it runs --------------------------------------

# printf-style conversions: %(key)flags width .precision length type
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0 +-]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?([a-zA-Z%])")
_FLOAT_SLACK = 320  # '%f' % 1e308 writes 309 digits


# What str() of a value that is neither text nor a plain container may write (a macro, a range, …).
_OTHER_TEXT_SIZE = 200


def _text_size(value: Any, limit: int) -> int:
    """An estimate of `len(str(value))` made without building it; stops counting past `limit`.

    `str()` of a small list holding one big string many times is huge: it must be refused
    before it is written, not measured after.
    """
    if isinstance(value, str):
        return len(value)
    total = 0
    pending = [value]
    while pending and total <= limit:
        item = pending.pop()
        if isinstance(item, str):
            total += len(item) + 4  # quotes and separator
        elif isinstance(item, bytes):
            total += 4 * len(item) + 5
        elif isinstance(item, bool) or item is None:
            total += 7
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 4
        elif isinstance(item, float):
            total += 28
        elif isinstance(item, Mapping):
            total += 2 + 2 * len(item)
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            total += 2
            pending.extend(item)
        else:
            total += _OTHER_TEXT_SIZE
    return total


def _as_number(digits: str, budget: _RenderBudget) -> int:
    # A width of more digits than the limit has is over it (and int() of 5000 digits raises).
    return budget.limits.max_chars + 1 if len(digits) > 9 else int(digits)


def _percent_size(budget: _RenderBudget, template: str | bytes, values: Any) -> int:
    """An upper bound of the length of `template % values`."""
    text = template.decode("latin-1") if isinstance(template, bytes) else template
    specs = list(_PERCENT_SPEC.finditer(text))
    if isinstance(values, tuple):
        items: list[Any] = list(values)
    elif isinstance(values, Mapping):
        items = list(values.values())
    else:
        items = [values]
    widest = 0
    for spec in specs:
        for digits in (spec[1], spec[2]):
            if digits and digits != "*":
                widest = max(widest, _as_number(digits, budget))
    longest = 0
    for item in items:
        if isinstance(item, int):
            widest = max(widest, abs(item)) if "*" in text else widest
            longest = max(longest, len(str(item)) if item.bit_length() <= MAX_INTEGER_BITS else widest)
        elif isinstance(item, float):
            longest = max(longest, _FLOAT_SLACK)
        else:
            longest = max(longest, _text_size(item, budget.limits.max_chars))
    return len(text) + len(specs) * (widest + longest)


def _joined_size(budget: _RenderBudget, separator: str, items: list[Any]) -> int:
    limit = budget.limits.max_chars
    total = max(len(items) - 1, 0) * len(separator)
    for item in items:
        total += _text_size(item, limit)
        if total > limit:
            break
    return total


def _replaced_size(text: str, old: str, new: str, count: int | None) -> int:
    occurrences = text.count(old)
    if count is not None and count >= 0:
        occurrences = min(occurrences, count)
    return len(text) + occurrences * (len(new) - len(old))


def _check_binop(budget: _RenderBudget, operator: str, left: Any, right: Any) -> None:
    plain_int = isinstance(left, int) and isinstance(right, int)
    if operator == "*":
        for sequence, times in ((left, right), (right, left)):
            if isinstance(sequence, _SIZED) and isinstance(times, int):
                budget.allow_size(len(sequence) * max(times, 0), "a repeated value")
        if plain_int and left.bit_length() + right.bit_length() > MAX_INTEGER_BITS:
            raise RenderLimitExceeded(f"a product would have more than {MAX_INTEGER_BITS} bits")
    elif operator == "**":
        if plain_int and right > 0 and abs(left) > 1 and right * left.bit_length() > MAX_INTEGER_BITS:
            raise RenderLimitExceeded(f"a power would have more than {MAX_INTEGER_BITS} bits")
    elif operator == "+":
        if isinstance(left, _SIZED) and isinstance(right, _SIZED):
            budget.allow_size(len(left) + len(right), "a sum")
    elif operator == "%" and isinstance(left, str | bytes):
        budget.allow_size(_percent_size(budget, left, right), "a formatted string")


def _bind(function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    bound = inspect.signature(function).bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


_TextCheck = Callable[[_RenderBudget, str, dict[str, Any]], None]


def _check_width(name: str) -> _TextCheck:
    def check(budget: _RenderBudget, text: str, arguments: dict[str, Any]) -> None:
        width = arguments.get(name)
        if isinstance(width, int):
            budget.allow_size(max(width, len(text)), f"a {name} of {width}")

    return check


def _check_indent(budget: _RenderBudget, text: str, arguments: dict[str, Any]) -> None:
    width = arguments.get("width", 4)
    indent = width if isinstance(width, int) else len(str(width))
    budget.allow_size(len(text) + (text.count("\n") + 1) * max(indent, 0), "an indented text")


def _check_wordwrap(budget: _RenderBudget, text: str, arguments: dict[str, Any]) -> None:
    width = arguments.get("width", 79)
    wrap = arguments.get("wrapstring") or "\n"
    lines = len(text) // max(width, 1) + text.count("\n") + 1 if isinstance(width, int) else len(text)
    budget.allow_size(len(text) + lines * len(str(wrap)), "a wrapped text")


def _check_replace(budget: _RenderBudget, text: str, arguments: dict[str, Any]) -> None:
    old, new, count = arguments.get("old"), arguments.get("new"), arguments.get("count")
    size = _replaced_size(text, str(old), str(new), count if isinstance(count, int) else None)
    budget.allow_size(size, "a replaced text")


def _check_count_argument(name: str) -> _TextCheck:
    def check(budget: _RenderBudget, text: str, arguments: dict[str, Any]) -> None:
        value = arguments.get(name)
        if isinstance(value, int):
            budget.allow_size(value, f"a {name} of {value}")

    return check


# Filters whose result can outgrow their input by far; `join` and `format` are handled apart.
_FILTER_CHECKS: dict[str, tuple[str, _TextCheck]] = {
    "center": ("value", _check_width("width")),
    "indent": ("s", _check_indent),
    "wordwrap": ("s", _check_wordwrap),
    "replace": ("s", _check_replace),
    "batch": ("value", _check_count_argument("linecount")),
    "slice": ("value", _check_count_argument("slices")),
}


# Filters that turn their whole value into text first (`str()`, `repr()`, JSON).
_TEXT_FILTERS = frozenset(
    {
        "capitalize", "center", "e", "escape", "forceescape", "format", "indent", "lower", "pprint",
        "replace", "safe", "string", "striptags", "title", "tojson", "trim", "truncate", "upper",
        "urlencode", "urlize", "wordcount", "wordwrap",
    }
)  # fmt: skip


def _bounded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """`function` with a step counted, its growth checked before it runs and its result after."""
    check = _FILTER_CHECKS.get(name)
    # Filters that take the context or environment get it before the value.
    value_index = 0 if getattr(function, "jinja_pass_arg", None) is None else 1

    @functools.wraps(function)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        budget.step()
        if name in _TEXT_FILTERS and len(args) > value_index:
            budget.allow_size(_text_size(args[value_index], budget.limits.max_chars), "a value as text")
        if name == "sum" and len(args) > value_index:
            items = list(args[value_index])
            start = kwargs.get("start", args[value_index + 2] if len(args) > value_index + 2 else 0)
            if isinstance(start, _SIZED):
                size = len(start) + sum(len(item) for item in items if isinstance(item, _SIZED))
                budget.allow_size(size, "a sum")
            args = (*args[:value_index], items, *args[value_index + 1 :])
        if check is not None:
            value_name, check_text = check
            arguments = _bind(function, args, kwargs)
            check_text(budget, str(arguments.get(value_name, "")), arguments)
        elif name == "join":
            bound = inspect.signature(function).bind(*args, **kwargs)
            items = list(bound.arguments["value"])
            bound.arguments["value"] = items  # the iterable is spent: pass the list on
            separator = bound.arguments.get("d", "")
            budget.allow_size(_joined_size(budget, str(separator), items), "a joined text")
            # Positionally: Jinja's async-variant wrappers look at args[0] for the eval context.
            result = function(*bound.args, **bound.kwargs)
            budget.allow_value(result)
            return result
        elif name == "format" and args:
            budget.allow_size(
                _percent_size(budget, str(args[0]), kwargs or tuple(args[1:])), "a formatted text"
            )
        result = function(*args, **kwargs)
        budget.allow_value(result)
        return result

    return bounded


def _check_builtin_call(
    budget: _RenderBudget, method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, ...]:
    """Refuse a method call of a builtin value (`'a'.center(10**9)`) whose result would be too big.

    Returns the positional arguments to call with (an iterator given to `join` is read once here).
    """
    owner, name = getattr(method, "__self__", None), getattr(method, "__name__", "")
    if isinstance(owner, str | bytes):
        if name in ("center", "ljust", "rjust", "zfill") and args and isinstance(args[0], int):
            budget.allow_size(max(args[0], len(owner)), f"a width of {args[0]}")
        elif name == "expandtabs":
            size = args[0] if args else kwargs.get("tabsize", 8)
            tabs = owner.count("\t") if isinstance(owner, str) else owner.count(b"\t")
            if isinstance(size, int):
                budget.allow_size(len(owner) + tabs * max(size, 0), "an expanded text")
        elif name == "replace" and len(args) >= 2 and isinstance(owner, str):
            count = args[2] if len(args) > 2 else kwargs.get("count")
            size = _replaced_size(
                owner, str(args[0]), str(args[1]), count if isinstance(count, int) else None
            )
            budget.allow_size(size, "a replaced text")
        elif name == "join" and args:
            items = list(args[0])
            budget.allow_size(_joined_size(budget, str(owner), items), "a joined text")
            return (items, *args[1:])
        elif name == "translate" and args and isinstance(args[0], Mapping):
            longest = max((len(v) for v in args[0].values() if isinstance(v, str)), default=1)
            budget.allow_size(len(owner) * max(longest, 1), "a translated text")
    elif isinstance(owner, int) and name == "to_bytes":
        length = args[0] if args else kwargs.get("length", 1)
        if isinstance(length, int):
            budget.allow_size(length, f"a length of {length}")
    return args


def _count_iterations(iterable: Iterable[Any]) -> Iterator[Any]:
    """Every `{% for %}` loop iterates through this: one step per item."""
    budget = _budget()
    for item in iterable:
        budget.step()
        yield item


_ITERATION_FILTER = "_counted_iterations"


class _UnfoldedCodeGenerator(CodeGenerator):
    """Jinja's compiler, minus compile-time evaluation, plus output accounting.

    Jinja folds constant expressions while compiling (`{{ 'a' * 10**9 }}` would be computed when a
    recipe is validated); here nothing the template computes runs before render time, where the
    budget applies. Literal text and `~` concatenation are counted too.
    """

    def __init__(
        self,
        environment: jinja2.Environment,
        name: str | None,
        filename: str | None,
        stream: Any = None,
        defer_init: bool = False,
        optimized: bool = True,
    ) -> None:
        super().__init__(environment, name, filename, stream, defer_init, optimized=False)

    def _output_child_to_const(self, node: nodes.Expr, frame: Frame, finalize: Any) -> str:
        if not isinstance(node, nodes.TemplateData):
            raise nodes.Impossible()
        return super()._output_child_to_const(node, frame, finalize)

    def _output_const_repr(self, group: Iterable[Any]) -> str:
        return f"environment.produce_text({super()._output_const_repr(group)})"

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.concat_bounded((")
        for argument in node.nodes:
            self.visit(argument, frame)
            self.write(", ")
        self.write("))")


class _VariableTracker(meta.TrackingCodeGenerator, _UnfoldedCodeGenerator):
    """`jinja2.meta.find_undeclared_variables`, without its compile-time folding."""


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox with every render under the current `_RenderBudget`."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _UnfoldedCodeGenerator

    def __init__(self, **options: Any) -> None:
        super().__init__(finalize=self._finalize_output, optimized=False, **options)
        self.filters = {name: _bounded_filter(name, f) for name, f in self.filters.items()}
        self.filters[_ITERATION_FILTER] = _count_iterations

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = _budget()
        budget.step()
        _check_binop(budget, operator, left, right)
        result = self.binop_table[operator](left, right)
        budget.allow_value(result)
        return result

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        budget.step()
        if isinstance(obj, BuiltinMethodType | BuiltinFunctionType):
            args = _check_builtin_call(budget, obj, args, kwargs)
        result = super().call(context, obj, *args, **kwargs)
        budget.allow_value(result)
        return result

    def getattr(self, obj: Any, attribute: str) -> Any:
        _budget().step()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _budget().step()
        return super().getitem(obj, argument)

    @staticmethod
    def _finalize_output(value: Any) -> str:
        # Every `{{ … }}` passes here (Jinja then applies str() again, a no-op on a str).
        budget = _budget()
        budget.allow_size(_text_size(value, budget.limits.max_chars), "an output")
        return budget.produce(str(value))

    @staticmethod
    def produce_text(text: str) -> str:
        return _budget().produce(text)

    @staticmethod
    def concat_bounded(values: tuple[Any, ...]) -> str:
        budget = _budget()
        budget.step()
        limit = budget.limits.max_chars
        budget.allow_size(sum(_text_size(value, limit) for value in values), "a concatenation")
        return "".join(str(value) for value in values)


def _new_environment() -> _BoundedSandbox:
    # trim/lstrip blocks: `{% for %}` lines in a YAML block scalar should not leave blank lines.
    environment = _BoundedSandbox(
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
    limits: RenderLimits = RenderLimits()

    def render(self, context: Mapping[str, Any]) -> str:
        """Render under `self.limits`. Raises TemplateError (a limit passed included), never more."""
        token = _CURRENT_BUDGET.set(_RenderBudget(self.limits))
        try:
            text = self._template.render(context).strip()
        except RenderLimitExceeded as error:
            raise TemplateError(
                f"refused: {error}", template=self.name, line=_template_line(self, error)
            ) from None
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
        finally:
            _CURRENT_BUDGET.reset(token)
        if len(text) > self.limits.max_chars:
            raise TemplateError(
                f"refused: the rendered text is {len(text)} characters long; "
                f"the limit is {self.limits.max_chars} characters",
                template=self.name,
            )
        return text

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()


def compile_template(
    source: str, *, name: str, variables: Collection[str], limits: RenderLimits | None = None
) -> PromptTemplate:
    """Parse, check and compile a template. Evaluates nothing the template computes.

    Args:
        source: the Jinja2 text.
        name: how errors refer to it, e.g. "stages[1].messages[0]".
        variables: the names a render will provide (seed columns, earlier stage names).
        limits: what each render may use (default: `RenderLimits()`).

    Raises:
        TemplateError: syntax error, undefined variable, or refused construct (with line numbers).
    """
    try:
        try:
            tree = _ENVIRONMENT.parse(source, name=name)
        except jinja2.TemplateSyntaxError as error:
            raise TemplateError(f"syntax error: {error.message}", template=name, line=error.lineno) from None
        known = set(variables)
        _refuse_unsafe_constructs(tree, name=name, known=known)
        _refuse_undefined_variables(tree, name=name, known=known)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, _ITERATION_FILTER, [], [], None, None, lineno=loop.lineno)
        code = _ENVIRONMENT.compile(tree, name=name, filename=_filename(name))
    except RecursionError:
        raise TemplateError("refused: the template is nested too deeply", template=name) from None
    except SyntaxError as error:  # Python's own limits on the generated code (20 nested blocks)
        reason = f"refused: the template is nested too deeply ({error.msg})"
        raise TemplateError(reason, template=name) from None
    template = _ENVIRONMENT.template_class.from_code(_ENVIRONMENT, code, _ENVIRONMENT.make_globals(None))
    return PromptTemplate(name=name, source=source, _template=template, limits=limits or RenderLimits())


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
    tracker = _VariableTracker(_ENVIRONMENT)
    tracker.visit(tree)
    undefined = tracker.undeclared_identifiers - known - TEMPLATE_GLOBALS
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
