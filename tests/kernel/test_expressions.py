"""The safe expression evaluator and ``{{ }}`` templates."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from nexusflow_kernel.errors import ExpressionError
from nexusflow_kernel.expressions import (
    check_expression,
    evaluate,
    json_safe,
    render_templates,
    template_errors,
)

NAMES = {
    "inputs": {
        "A": 12,
        "B": {"status": 200, "rows": [{"id": i, "name": f"n{i}"} for i in range(20)]},
    },
    "params": {"n": 3, "who": "ada", "tags": ["x", "y"]},
}


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("1 + 2 * 3", 7),
        ("7 // 2, 7 % 2, 2 ** 10", (3, 1, 1024)),
        ("params['n'] * 2", 6),
        ("inputs['A'] > 10", True),
        ("inputs['B']['status'] == 200 and params['who'] == 'ada'", True),
        ("inputs.B.status", 200),
        ("[r['id'] for r in inputs['B']['rows'] if r['id'] % 5 == 0]", [0, 5, 10, 15]),
        ("{r['name']: r['id'] for r in inputs.B.rows[:2]}", {"n0": 0, "n1": 1}),
        ("sum(r['id'] for r in inputs.B.rows)", 190),
        ("len(params['tags'])", 2),
        ("'-'.join(params['tags']).upper()", "X-Y"),
        ("f\"{params['who']}:{params['n']:03d}\"", "ada:003"),
        ("'%.2f' % 3.14159", "3.14"),
        ("sorted([3, 1, 2], reverse=True)", [3, 2, 1]),
        ("max(1, 5, 3), min([4, 2]), abs(-3), round(2.567, 2)", (5, 2, 3, 2.57)),
        ("json_loads('{\"a\": [1, 2]}')['a'][1]", 2),
        ("json_dumps({'a': 1})", '{"a": 1}'),
        ("'yes' if params['n'] > 2 else 'no'", "yes"),
        ("params.get('missing', 'dflt')", "dflt"),
        ("[*range(3), *params['tags']]", [0, 1, 2, "x", "y"]),
        ("(\n  params['n']\n  + 1\n)", 4),
        ("params['n'] +\n 1", 4),
        ("None is None and True", True),
    ],
)
def test_evaluates(expression: str, expected: object) -> None:
    assert evaluate(expression, NAMES) == expected


def test_now_is_an_iso_string() -> None:
    value = evaluate("now()", NAMES)
    assert isinstance(value, str) and value[:2] == "20" and "T" in value


def test_missing_key_names_the_place_the_expression_and_the_key() -> None:
    with pytest.raises(ExpressionError) as info:
        evaluate("inputs['Z'] > 10", NAMES, where="node 'C' /config/expression")
    message = str(info.value)
    assert message.startswith("expression `inputs['Z'] > 10` at node 'C' /config/expression:")
    assert "KeyError" in message and "'Z'" in message and "keys: 'A', 'B'" in message
    assert "\n" not in message


def test_index_and_type_errors_are_clear() -> None:
    with pytest.raises(ExpressionError, match=r"IndexError: index 99 is out of range .*length 20"):
        evaluate("inputs.B.rows[99]", NAMES)
    with pytest.raises(ExpressionError, match=r"TypeError: cannot index params\['who'\]"):
        evaluate("params['who']['x']", NAMES)
    with pytest.raises(ExpressionError, match=r"ZeroDivisionError"):
        evaluate("1 / 0", NAMES)
    with pytest.raises(ExpressionError, match=r"NameError: name 'nope' is not defined"):
        evaluate("nope + 1", NAMES)
    with pytest.raises(ExpressionError, match=r"SyntaxError"):
        evaluate("1 +", NAMES)
    with pytest.raises(ExpressionError, match=r"empty"):
        evaluate("   ", NAMES)


@pytest.mark.parametrize(
    "expression",
    [
        "''.__class__.__mro__[1].__subclasses__()",
        "().__class__.__bases__[0].__subclasses__()",
        "inputs.__class__",
        "len.__self__",
        "__import__('os').system('true')",
        "open('/etc/passwd').read()",
        "eval('1')",
        "exec('x = 1')",
        "getattr(inputs, '__class__')",
        "type(1)",
        "globals()",
        "str.mro()",
        "'{0.__class__}'.format(1)",
        "'{x}'.format_map(params)",
        "(lambda: 1)()",
        "[x := 1]",
        "import os",
        "x = 1",
        "[].append(1)",
        "params.clear()",
        "params['tags'].extend(params['tags'])",
        "inputs['A'](1)",
        "[f for f in [len]][0](1)",
        "9**9**9",
        "10**100000",
        "'a' * 10**9",
        "[0] * 10**9",
        "'x' * 999999 + 'y' * 999999",
        "'a'.ljust(10**9)",
        "'1'.zfill(10**9)",
        "''.join(['a' * 99999] * 99999)",
        "('a' * 999).replace('a', 'b' * 99999)",
        "'%1000000000s' % 'a'",
        "'%*s' % (10**9, 'a')",
        "f'{1:>1000000000}'",
        "range(10**12)",
        "sum(range(10**18))",
        "[[1] * 99999 for i in range(1000)]",
        "[1 for a in range(2000) for b in range(2000)]",
        "round(5, -10**8)",
        "2 << 10**9",
        "sum([[1]] * 100, [])",
        "'x' * " + "9" * 30000,
        "[" * 1000 + "]" * 1000,
        "-" * 15000 + "1",
        "not " * 4000 + "1",
    ],
)
def test_injection_and_resource_attacks_are_refused(expression: str) -> None:
    started = time.monotonic()
    with pytest.raises(ExpressionError):
        evaluate(expression, NAMES, where="node 'X' /config/expression")
    assert time.monotonic() - started < 2.0


def test_underscore_attribute_message() -> None:
    with pytest.raises(ExpressionError, match=r"refused: attribute '__class__'"):
        evaluate("''.__class__", NAMES)


def test_evaluation_does_not_mutate_or_leak_between_calls() -> None:
    names = {"inputs": {}, "params": {"a": [1, 2]}}
    assert evaluate("[x for x in params['a']]", names) == [1, 2]
    with pytest.raises(ExpressionError, match="name 'x' is not defined"):
        evaluate("x", names)
    assert names == {"inputs": {}, "params": {"a": [1, 2]}}


def test_check_expression_is_parse_only() -> None:
    assert check_expression("inputs['A'] > 10") is None
    assert check_expression("inputs['nope'] + 1") is None  # names are not known yet
    assert "SyntaxError" in (check_expression("inputs['A'] >") or "")
    assert "refused" in (check_expression("x.__class__") or "")
    assert "lambda" in (check_expression("lambda: 0") or "")


def test_templates_keep_the_type_of_a_lone_template() -> None:
    config = {
        "n": "{{ params['n'] }}",
        "spaced": "  {{ params['tags'] }} ",
        "text": "n={{ params['n'] }} tags={{ params['tags'] }}",
        "plain": "no template",
        "number": 5,
    }
    out = render_templates(config, NAMES)
    assert out == {
        "n": 3,
        "spaced": ["x", "y"],
        "text": 'n=3 tags=["x", "y"]',
        "plain": "no template",
        "number": 5,
    }


def test_templates_in_nested_config_exempt_keys_and_secrets() -> None:
    config = {
        "expression": "{{ not rendered }}",
        "headers": {"X-Who": "{{ params['who'] }}", "Authorization": {"$secret": "TOKEN"}},
        "query": {"ids": ["{{ inputs.B.rows[1]['id'] }}", "{{ inputs.A + 1 }}"]},
        "json": {"deep": [{"x": "{{ params['n'] * 10 }}"}]},
    }
    out = render_templates(config, NAMES, exempt=("expression",))
    assert out["expression"] == "{{ not rendered }}"
    assert out["headers"] == {"X-Who": "ada", "Authorization": {"$secret": "TOKEN"}}
    assert out["query"] == {"ids": [1, 13]}
    assert out["json"] == {"deep": [{"x": 30}]}
    assert config["json"] == {"deep": [{"x": "{{ params['n'] * 10 }}"}]}


def test_template_errors_name_the_pointer() -> None:
    with pytest.raises(ExpressionError) as info:
        config = {"h": {"a/b": ["ok", "{{ params['zz'] }}"]}}
        render_templates(config, NAMES, where="node 'B' /config")
    assert "at node 'B' /config/h/a~1b/1:" in str(info.value)
    assert "KeyError" in str(info.value)

    faults = template_errors(
        {"url": "{{ 1 + }}", "h": ["{{ ok }}", "{{ open"], "expression": "{{ ("},
        exempt=("expression",),
    )
    assert [p for p, _ in faults] == ["/url", "/h/1"]
    assert "SyntaxError" in faults[0][1]
    assert "no matching" in faults[1][1]
    assert template_errors({"a": "{{ x.__class__ }}"})[0][0] == "/a"


def test_json_safe() -> None:
    import datetime as dt
    import decimal
    import uuid

    value = {
        1: (1, 2),
        "d": decimal.Decimal("2.50"),
        "i": decimal.Decimal("3"),
        "t": dt.date(2024, 1, 2),
        "u": uuid.UUID(int=1),
        "b": b"\x00\x01",
        "r": range(3),
    }
    assert json_safe(value) == {
        "1": [1, 2], "d": 2.5, "i": 3, "t": "2024-01-02",
        "u": "00000000-0000-0000-0000-000000000001", "b": "AAE=", "r": [0, 1, 2],
    }


def test_hot_path_is_fast() -> None:
    names = {"inputs": {"A": 4}, "params": {"n": 2}}
    started = time.perf_counter()
    for _ in range(5000):
        evaluate("inputs['A'] * params['n'] + 1", names)
    assert (time.perf_counter() - started) / 5000 < 0.0005


def test_import_is_cheap() -> None:
    code = "import sys, nexusflow_kernel.expressions; print('simpleeval' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
