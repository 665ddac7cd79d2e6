"""Issue #13, finding 5: expression limits hold before anything big is built.

``len('%(a(b))1000000000s' % {'a(b)': 1})`` built a 1 GB string before the allocation check
(the width regex stopped at the first ``)``). Widths now come from the parsed format, every
way of making big text (``str``, f-strings, ``%s``, ``json_dumps``, templates) is measured
first, values repeated by reference are counted once per appearance, and every evaluation has
a CPU budget and, inside a node, the node's deadline. Each attack is refused quickly with
little memory: Python's own allocations are traced while it runs.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
import tracemalloc
from dataclasses import replace
from typing import Any

import pytest

from nexusflow_kernel import expressions
from nexusflow_kernel.errors import ExpressionError, NodeExecutionError
from nexusflow_kernel.expressions import evaluate, render_templates
from nexusflow_kernel.nodes.base import NodeContext
from nexusflow_kernel.nodes.logic import TransformNode
from nexusflow_kernel.settings import Settings
from nexusflow_kernel.textbounds import FormatRefused, format_spec_numbers, percent_format

NAMES: dict[str, Any] = {"inputs": {"A": {"rows": [{"id": i} for i in range(3)]}},
                         "params": {"s": "x" * 1000, "n": 3}}
PEAK_LIMIT = 48 * 1024 * 1024
"""Most memory an attack may make Python allocate before it is refused."""


def refused_cheaply(expression: str, names: dict[str, Any] | None = None,
                    where: str = "node 'X' /config/expression") -> str:
    """Evaluate ``expression``: it must fail with an ExpressionError, fast (timed on its own)
    and small (peak of Python's allocations, traced in a second run)."""
    names = NAMES if names is None else names
    started = time.monotonic()
    with pytest.raises(ExpressionError) as info:
        evaluate(expression, names, where=where)
    took = time.monotonic() - started
    assert took < 3.0, f"{expression}: took {took:.1f} s"
    tracemalloc.start()
    try:
        with pytest.raises(ExpressionError):
            evaluate(expression, names, where=where)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < PEAK_LIMIT, f"{expression}: {peak / 2**20:.0f} MiB allocated before refusing"
    assert where in str(info.value)
    return str(info.value)


def test_the_issue_reproduction_is_refused_before_allocating() -> None:
    message = refused_cheaply("len('%(a(b))1000000000s' % {'a(b)': 1})")
    assert "format width 1000000000 is over 1000" in message


@pytest.mark.parametrize(
    "expression",
    [
        # % formatting: widths and precisions behind keys, flags, bytes
        "'%(a(b)c)100000000s' % {'a(b)c': 1}",
        "'%(x)s%(a(b))100000000d' % {'x': 1, 'a(b)': 2}",
        "'%(a)-0100000000d' % {'a': 1}",
        "'%.100000000f' % 1.0",
        "'%(a(b)).100000000f' % {'a(b)': 1.0}",
        "'%100000000c' % 65",
        "'%(a)l100000000d' % {'a': 1}",
        "b'%100000000s' % b'a'",
        "b'%(a(b))100000000s' % {b'a(b)': b'x'}",
        "'%*s' % (100000000, 'a')",
        "'%.*f' % (100000000, 1.0)",
        # f-string specs, parsed: fill, sign, grouping, precision, nested, Unicode digits
        "f'{1:>100000000}'",
        "f'{1:9>100000000}'",
        "f'{1:0=+#100000000,.2f}'",
        "f'{1.0:.100000000f}'",
        "f'{1:{\"<\"}{10**8}}'",
        "f'{1:\u0661\u0660\u0660\u0660\u0660\u0660\u0660\u0660\u0660}'",
        # what is not there stays unavailable
        "'{:>100000000}'.format(1)",
        "format(1, '>100000000')",
        "'\\t'.expandtabs(10**9)",
        "pow(10, 10**9)",
        # repeated references: cheap to build, huge as text
        "str((('a' * 1000,) * 1000) * 100)",
        "len(str([['a' * 10000] * 1000] * 10))",
        "f'{[params[\"s\"]] * 200000}'",
        "f'{[params[\"s\"]] * 200000!r}'",
        "'%s' % ([params['s']] * 200000,)",
        "'%(a)r' % {'a': [params['s']] * 200000}",
        "json_dumps([params['s']] * 200000)",
        "[str(x) for x in [[params['s']] * 200000]]",
        "[[params['s'] for i in range(100000)] for j in range(1000)]",
        "[[1] * 100000] * 1000",
        "[([0] * 999999,) * 1000]",
        "[b for b in [(0,) * 999999] for t in [tuple(b for i in range(100))]]",
        "''.join(params['s'] for i in range(2000))",
        "'x'.join([params['s']] * 10000)",
        "params['s'].center(10**9)",
        "params['s'].zfill(10**8)",
        # integers
        "int('1' * 999999, 2)",
        "10 ** 10 ** 8",
        "(10 ** 30000) ** 4",
        "str(2 ** 99999)",
        "range(10 ** 7)",
    ],
)
def test_big_results_are_refused_before_they_are_built(expression: str) -> None:
    refused_cheaply(expression)


def test_ordinary_formatting_still_works() -> None:
    cases = {
        "'%s and %d' % ('a', 2)": "a and 2",
        "'%(n)05.1f|%(s).3s' % {'n': 2.25, 's': 'abcdef'}": "002.2|abc",
        "'%(a(b))s' % {'a(b)': 7}": "7",
        "'%-4s|%+d|%#x|%%|%c' % ('ab', 3, 255, 65)": "ab  |+3|0xff|%|A",
        "b'%s-%d' % (b'x', 5)": b"x-5",
        "f'{params[\"n\"]:>5}|{2.5:08.3f}|{1234567:,}|{255:#x}|{\"x\"!r:^7}'":
            "    3|0002.500|1,234,567|0xff|  'x'  ",
        "f'{1:\u0665}'": "    1",
        "str([1, 'a'])": "[1, 'a']",
        "json_dumps({'a': [1, 2]}, 2)": '{\n  "a": [\n    1,\n    2\n  ]\n}',
        "len([params['s']] * 1000)": 1000,
        "int('ff', 16)": 255,
    }
    for expression, expected in cases.items():
        assert evaluate(expression, NAMES) == expected, expression


# ----------------------------------------------------- the % parser agrees with Python's


def _outcome(fn: Any) -> tuple[str, Any]:
    try:
        return "ok", fn()
    except FormatRefused as exc:
        return "refused", str(exc)
    except Exception as exc:  # the error type must match Python's
        return "error", type(exc).__name__


def test_percent_format_matches_python_on_random_formats() -> None:
    """Thousands of random formats: the checked formatting gives Python's result or error."""
    rng = random.Random(13)
    alphabet = ["%", "%", "%", "(", ")", "a", "b", "s", "d", "r", "f", "x", "c", "%", ".",
                "-", "0", "#", " ", "+", "l", "5", "12", "z", "é"]
    values: list[Any] = [(), (1,), (1, "x"), ("ab", 2.5, 3), {"a": 1, "b": "x", "a(b)": 2},
                         {"a": "x"}, [1], 5, "s", {"(": 1}]
    checked = 0
    for _ in range(6000):
        fmt = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8)))
        value = rng.choice(values)
        ours = _outcome(lambda f=fmt, v=value: percent_format(f, v, max_width=1000))
        theirs = _outcome(lambda f=fmt, v=value: f % v)
        if ours[0] == "refused":
            continue
        assert ours == theirs, (fmt, value, ours, theirs)
        checked += 1
        if not fmt.isascii():  # CPython's bytes error for a non-ASCII conversion is odd
            continue
        raw = fmt.encode("ascii")
        if isinstance(value, dict):
            value = {k.encode(): (v.encode() if isinstance(v, str) else v)
                     for k, v in value.items()}
        elif isinstance(value, tuple):
            value = tuple(v.encode() if isinstance(v, str) else v for v in value)
        ours_b = _outcome(lambda f=raw, v=value: percent_format(f, v, max_width=1000))
        theirs_b = _outcome(lambda f=raw, v=value: f % v)
        if ours_b[0] != "refused":
            assert ours_b == theirs_b, (raw, value, ours_b, theirs_b)
    assert checked > 3000


def test_format_spec_parser_reads_width_and_precision_as_python_does() -> None:
    fills = ["", "<", ">", "^", "=", "x<", "0>", "9^", "{>"]
    signs, zs, alts, zeros = ["", "+", "-", " "], ["", "z"], ["", "#"], ["", "0"]
    widths, groups, precs = ["", "7", "12", "\u0663"], ["", ",", "_"], ["", ".0", ".3"]
    types = ["", "f", "e", "g", "%", "d", "x", "s"]
    seen = 0
    for parts in itertools.product(fills, signs, zs, alts, zeros, widths, groups, precs, types):
        spec = "".join(parts)
        value: Any = "abc" if parts[-1] == "s" else (7 if parts[-1] in "dx" else 2.5)
        try:
            text = format(value, spec)
        except ValueError:
            continue
        width, precision = format_spec_numbers(spec)
        expect_w = int(parts[5]) if parts[5] else None
        expect_p = int(parts[7][1:]) if parts[7] else None
        assert (width, precision) == (expect_w, expect_p), spec
        assert width is None or len(text) >= width, spec
        seen += 1
    assert seen > 1000
    for bad in ["<<<5", "5x5", ">10.", "abc"]:
        with pytest.raises(FormatRefused):
            format_spec_numbers(bad)


# ---------------------------------------------------------------- CPU budget and deadlines

SLOW = "[i for s in ['ab' * 400000] for i in range(10 ** 6) if str(i) in s]"
"""About a minute of CPU in small steps: each step is cheap, there are many."""


def test_every_evaluation_has_a_cpu_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(expressions, "MAX_CPU_S", 0.5)
    started = time.monotonic()
    with pytest.raises(ExpressionError) as info:
        evaluate(SLOW, NAMES, where="node 'T' /config/expression")
    assert time.monotonic() - started < 2.5
    message = str(info.value)
    assert "node 'T' /config/expression" in message
    assert "over 0.5 s of CPU time" in message


def test_templates_stop_at_the_deadline_naming_node_and_field() -> None:
    """Outside the worker's main thread no alarm can stop a template: the evaluator looks at
    the deadline itself."""
    config = {"url": "http://example.invalid/{{ " + SLOW + " }}", "method": "GET"}
    outcome: dict[str, Any] = {}

    def render() -> None:
        started = time.monotonic()
        try:
            render_templates(config, NAMES, where="node 'H' /config",
                             deadline=time.monotonic() + 0.5)
        except ExpressionError as exc:
            outcome["error"] = str(exc)
        outcome["took"] = time.monotonic() - started

    thread = threading.Thread(target=render)
    thread.start()
    thread.join(30)
    assert outcome.get("took", 99) < 2.0, outcome
    assert "node 'H' /config/url" in outcome["error"]
    assert "timeout_s ran out" in outcome["error"]


def test_all_templates_of_a_config_share_one_budget_of_text() -> None:
    big = "{{ params['s'] * 999 }}"
    config = {"headers": {f"X-{i}": big for i in range(20)}}
    tracemalloc.start()
    try:
        with pytest.raises(ExpressionError, match="render over 16000000 characters"):
            render_templates(config, NAMES, where="node 'H' /config")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024 * 1024


def test_template_text_is_measured_before_it_is_written() -> None:
    config = {"body": "rows: {{ [params['s']] * 300000 }}"}
    with pytest.raises(ExpressionError, match=r"node 'H' /config/body.*characters"):
        render_templates(config, NAMES, where="node 'H' /config")


def test_transform_output_over_the_limit_is_refused_before_it_is_copied() -> None:
    """A transform's value is made plain JSON (copied) before it is stored: ten thousand
    references to one list of a thousand numbers are ten thousand copies."""
    settings = replace(Settings(), max_output_bytes=4 * 1024 * 1024)
    ctx = NodeContext(run_id="r", node_id="T", attempt=1,
                      config={"expression": "[[1] * 1000] * 10000"}, inputs={},
                      params=NAMES["params"], settings=settings)
    tracemalloc.start()
    try:
        with pytest.raises(NodeExecutionError, match="NEXUSFLOW_MAX_OUTPUT_BYTES"):
            TransformNode().run(ctx)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024, f"{peak / 2**20:.0f} MiB"
