"""Templates: sandboxed rendering, static validation with line numbers, injection payloads refused."""

from __future__ import annotations

import pytest

from generator.templates import TemplateError, compile_template

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
