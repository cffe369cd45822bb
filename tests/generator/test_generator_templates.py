"""Templates: sandboxed rendering, static validation with line numbers, injection payloads refused."""

from __future__ import annotations

import tracemalloc

import pytest

from generator.pipeline import run_recipe
from generator.recipe import load_recipe
from generator.templates import RenderLimits, TemplateError, compile_template
from tests.generator.scripted_teacher import ScriptedEngine

KNOWN = {"topic", "items", "row"}


def test_renders_variables_loops_and_strips_surrounding_whitespace() -> None:
    template = compile_template(
        "\nTopic: {{ topic }}\n{% for item in items %}\n{{ loop.index }}. {{ item }}\n{% endfor %}\n",
        name="t",
        variables=KNOWN,
    )
    assert template.render({"topic": "rain", "items": ["a", "b"]}) == "Topic: rain\n1. a\n2. b"


def test_syntax_error_names_template_and_line() -> None:
    with pytest.raises(TemplateError) as caught:
        compile_template(
            "line one\nline two {{ topic \nline three", name="stages[0].messages[1]", variables=KNOWN
        )
    error = caught.value
    assert error.template == "stages[0].messages[1]"
    assert error.line in (2, 3)
    assert str(error).startswith(f"stages[0].messages[1], line {error.line}: syntax error")


def test_undefined_variable_names_template_line_and_variable() -> None:
    with pytest.raises(TemplateError) as caught:
        compile_template(
            "Hello\n\n{{ topic }} and {{ tpoic }}\n{{ other }}", name="stages[1].question", variables=KNOWN
        )
    error = caught.value
    assert (error.template, error.line, error.variable) == ("stages[1].question", 3, "tpoic")
    message = str(error)
    assert "stages[1].question" in message
    assert "line 3" in message
    assert "'tpoic'" in message
    assert "other" in message  # the other undefined variable is listed too


def test_variables_defined_inside_the_template_are_not_undefined() -> None:
    source = "{% set n = items|length %}{% for x in items %}{{ x }}{% endfor %}{{ n }}"
    assert compile_template(source, name="t", variables={"items"}).render({"items": [1, 2]}) == "122"


@pytest.mark.parametrize(
    ("payload", "offender"),
    [
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "__class__"),
        ("{{ cycler.__init__.__globals__.os.popen('id').read() }}", "cycler"),
        ("{{ joiner.__init__.__globals__ }}", "joiner"),
        ("{{ namespace.__init__.__globals__ }}", "namespace"),
        ("{{ lipsum.__globals__['os'] }}", "lipsum"),
        ("{{ self._TemplateReference__context }}", "self"),
        ("{{ self }}", "self"),
        ("{{ config.items() }}", "config"),
        ("{{ request.application }}", "request"),
        ("{{ topic['__class__'] }}", "__class__"),
        ("{{ topic|attr('__class__') }}", "__class__"),
        ("{{ items|map(attribute='__class__')|list }}", "__class__"),
        ("{{ items|map('attr', '__class__')|list }}", "__class__"),
        ("{{ items|selectattr('__class__')|list }}", "__class__"),
        ("{{ items|join(',', attribute='x.__class__') }}", "__class__"),
        ("{{ '{0.__class__}'.format(topic) }}", "format"),
        ("{{ topic.mro() }}", "mro"),
        ("{{ __builtins__ }}", "__builtins__"),
        ("{{ topic.__init__.__globals__ }}", "__init__"),
    ],
)
def test_injection_payloads_are_refused_before_running(payload: str, offender: str) -> None:
    with pytest.raises(TemplateError) as caught:
        compile_template(f"Question:\n{payload}", name="stages[0].messages[0]", variables=KNOWN)
    error = caught.value
    assert "refused" in str(error)
    assert error.line == 2
    assert error.variable == offender
    assert f"'{offender}'" in str(error)


def test_template_loading_tags_are_refused() -> None:
    with pytest.raises(TemplateError, match="include"):
        compile_template("{% include '/etc/passwd' %}", name="t", variables=KNOWN)


def test_dynamic_attribute_from_data_is_stopped_by_the_sandbox_at_render() -> None:
    # The key comes from seed data, so only the runtime sandbox can see it; it must not execute.
    template = compile_template("x\n{{ topic[row] }}", name="stages[0].messages[0]", variables=KNOWN)
    with pytest.raises(TemplateError) as caught:
        template.render({"topic": "text", "row": "__class__"})
    assert "sandbox" in str(caught.value)
    assert caught.value.line == 2


def test_render_errors_become_template_errors_with_line() -> None:
    template = compile_template("a\nb\n{{ row.missing }}", name="q", variables=KNOWN)
    with pytest.raises(TemplateError) as caught:
        template.render({"row": {}})
    assert (caught.value.line, caught.value.variable) == (3, "missing")
    broken = compile_template("{{ 1 // 0 }}", name="q", variables=KNOWN)
    with pytest.raises(TemplateError, match="ZeroDivisionError"):
        broken.render({})


def test_a_recipe_variable_may_use_a_name_payloads_like() -> None:
    # A seed column called `request` is data, not Flask's request object.
    template = compile_template("{{ request }}", name="t", variables={"request"})
    assert template.render({"request": "please"}) == "please"


def test_sandbox_is_immutable() -> None:
    template = compile_template("{{ items.append(3) }}", name="t", variables=KNOWN)
    items = [1, 2]
    with pytest.raises(TemplateError):
        template.render({"items": items})
    assert items == [1, 2]


# -- bounded work (issue #12): validation evaluates nothing, renders stay within RenderLimits ----


def test_validation_evaluates_no_expression() -> None:
    # Jinja folds constants while compiling: `'a' * 10**8` used to be built (100 MB, seconds) by
    # merely validating a recipe, in the API process.
    tracemalloc.start()
    try:
        for source in ("{{ 'a' * 10**8 }}", "{{ 'a'|center(10**8) }}", "x{{ 'a' ~ 'b' * 10**8 }}"):
            compile_template(source, name="t", variables=KNOWN)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'a' * 10**9 }}",
        "{{ 'a' * n }}",
        "{{ [0] * 10**9 }}",
        "{{ 10 ** 100000000 }}",
        "{{ 'a'|center(10**9) }}",
        "{{ 'a'.ljust(10**9) }}",
        "{{ '%0999999999d' % 1 }}",
        "{{ '%0999999999d'|format(1) }}",
        "{{ ('x' * 1000)|replace('x', 'y' * 1000) }}",
        "{{ range(100000)|join('x' * 1000) }}",
        "{{ 'x'.join(['y' * 1000] * 1000) }}",
        "{{ (1).to_bytes(10**9, 'big') }}",
        "{{ [1]|batch(10**9, 0)|list }}",
        "{% set a = 'a' * 1000 %}" + "{% set a = a ~ a %}" * 30 + "{{ a }}",
        # str() of a small list that holds one big string many times
        "{{ ['a' * 100000] * 100000 }}",
        "{{ (['a' * 100000] * 100000)|string }}",
        "{{ 'x' ~ (['a' * 100000] * 100000) }}",
        "{{ '%s' % ([['a' * 100000] * 100000],) }}",
        "{{ (['a' * 100000] * 100000)|join }}",
        "{{ ([['a'] * 100000] * 100000)|sum(start=[]) }}",
        "{% set x %}{% for i in range(100000) %}{% for j in range(100) %}0123456789{% endfor %}"
        "{% endfor %}{% endset %}",
    ],
)
def test_render_refuses_to_make_huge_values(source: str) -> None:
    template = compile_template(source, name="stages[0].messages[0]", variables={"n"})
    tracemalloc.start()
    try:
        with pytest.raises(TemplateError, match="refused") as caught:
            template.render({"n": 10**8})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20_000_000, source
    assert caught.value.template == "stages[0].messages[0]"


def test_render_counts_steps_of_loops_and_calls() -> None:
    limits = RenderLimits(max_steps=10_000, max_seconds=3600)
    loops = compile_template(
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        name="t",
        variables=KNOWN,
        limits=limits,
    )
    with pytest.raises(TemplateError, match="more than 10000 steps"):
        loops.render({})
    recursion = compile_template(
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}",
        name="t",
        variables=KNOWN,
        limits=limits,
    )
    with pytest.raises(TemplateError, match="steps"):
        recursion.render({})


def test_rendered_text_over_the_limit_is_a_template_error() -> None:
    template = compile_template(
        "Topic: {{ topic }}", name="t", variables=KNOWN, limits=RenderLimits(max_chars=50)
    )
    assert template.render({"topic": "x" * 40}) == "Topic: " + "x" * 40
    with pytest.raises(TemplateError, match="the limit is 50 characters"):
        template.render({"topic": "x" * 60})
    # The same text made inside the template is refused before it exists.
    made = compile_template("{{ 'x' * n }}", name="t", variables={"n"}, limits=RenderLimits(max_chars=50))
    with pytest.raises(TemplateError, match="the limit is 50 characters"):
        made.render({"n": 51})


def test_ordinary_templates_render_as_before_under_the_limits() -> None:
    source = (
        "{% set words = items|map('upper')|join(', ') %}{{ '%s: %d' % (topic, items|length) }} "
        "{{ words }} {{ topic ~ '!' }} {{ '-' * 3 }} {{ 2 ** 10 }}"
        "{% for item in items %} {{ loop.index }}/{{ loop.length }}={{ item|center(5) }}{% endfor %}"
    )
    template = compile_template(source, name="t", variables=KNOWN)
    assert template.render({"topic": "rain", "items": ["a", "b"]}) == (
        "rain: 2 A, B rain! --- 1024 1/2=  a   2/2=  b"
    )


@pytest.mark.parametrize(
    "source",
    [
        "{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}",
        "{{ 1" + " + 1" * 20000 + " }}",
        "{% for i in [1] %}" * 30 + "x" + "{% endfor %}" * 30,  # Python allows 20 nested blocks
    ],
)
def test_a_deeply_nested_template_is_a_template_error(source: str) -> None:
    with pytest.raises(TemplateError, match=r"nested too deeply|syntax error"):
        compile_template(source, name="t", variables=KNOWN)


def test_a_prompt_over_the_recipe_limit_fails_its_item_and_the_run_goes_on() -> None:
    recipe = load_recipe(
        {
            "name": "long",
            "max_prompt_chars": 1000,
            "seeds": {"values": {"n": [10, 100_000_000, 20]}},
            "stages": [{"name": "answer", "messages": [{"role": "user", "content": "{{ 'a' * n }}"}]}],
        }
    )
    rows = [{"n": 10}, {"n": 100_000_000}, {"n": 20}]
    engine = ScriptedEngine(lambda request, k: "ok")
    samples = [s for chunk in run_recipe(recipe, engine, rows) for s in chunk.samples]
    by_item = {s.item_index: s for s in samples}
    assert (by_item[0].parse_ok, by_item[2].parse_ok) == (True, True)
    assert by_item[1].parse_ok is False
    assert "the limit is 1000 characters" in (by_item[1].parse_error or "")
    assert [len(r.messages[0]["content"]) for call in engine.calls for r in call] == [10, 20]
