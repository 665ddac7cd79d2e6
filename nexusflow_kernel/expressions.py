"""Safe expressions and ``{{ }}`` templates over a node's inputs and the run's params.

Expressions use Python syntax (``inputs['A']['count'] > 10``, ``[r['id'] for r in rows]``) but
are never given to ``eval``: a flow document is data written by anyone who can edit it, and the
worker that evaluates it holds credentials. The evaluator is built on the well-kept
``simpleeval`` library (``EvalWithCompoundTypes``), tightened here:

* the source is parsed with ``ast.parse(mode="eval")`` and walked against a whitelist of node
  types before anything runs: no statements, imports, lambdas, assignment expressions;
* the only names are the ones given (``inputs``, ``params``), comprehension variables and a small
  set of helper functions; nothing reaches builtins, modules, ``open`` or ``__import__``;
* attribute access never reaches a name starting with ``_`` (no ``__class__``, ``__mro__``,
  ``__subclasses__``), and otherwise only a per-type list of read-only methods (``str.lower``,
  ``dict.get`` ...); on a dict, ``d.key`` reads the key;
* sizes are bounded before they are built: integers (``9**9**9``, ``int(text, 2)``), repeated
  and joined strings and lists (``'a' * 10**9``), padding, ``range``, comprehension iterations
  and the total of what one evaluation may allocate; format widths and precisions come from the
  parsed format (``%`` formatting is done by ``textbounds.percent_format``, f-string specs are
  parsed completely), never from a pattern over the format text;
* text is bounded before it is made: ``str()``, ``json_dumps``, f-strings, ``%s`` and the text
  of a template are measured first (``textbounds.text_size``), and so is every list, tuple,
  dict or set an evaluation builds, counting a value that appears many times once per
  appearance (``[big] * 10**6`` is cheap to build but not to print, compare, hash or store);
* every evaluation has a CPU budget (``MAX_CPU_S``) and, inside a node, the node's deadline:
  past either it stops with an ``ExpressionError`` naming the node and the field.

Parsed trees are cached, so the hot path (a transform run thousands of times a second) is one
dictionary lookup plus the walk itself. ``simpleeval`` is imported on first use only.
"""

from __future__ import annotations

import ast
import contextvars
import functools
import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from .errors import ExpressionError
from .textbounds import FormatRefused, format_spec_numbers, percent_format, text_size, weight

MAX_EXPRESSION_LENGTH = 20_000
"""Longest expression accepted, in characters."""

MAX_SEQUENCE = 1_000_000
"""Longest string, list or tuple one operation may build."""

MAX_INT_BITS = 100_000
"""Largest integer an operation may build, in bits (about 30,000 decimal digits)."""

MAX_ITERATIONS = 1_000_000
"""Most comprehension steps, and the longest ``range``, in one evaluation."""

MAX_ALLOCATED = 5_000_000
"""Most characters and elements that one evaluation may create in total."""

MAX_FORMAT_WIDTH = 1_000
"""Largest width or precision in a format spec (``f'{x:>10}'``, ``'%5.2f' % x``)."""

MAX_EXPANDED = 50_000_000
"""Most elements and characters a list, tuple, dict or set built by one evaluation may hold
when every repeated reference is counted: ``[big] * 10**6`` is cheap to build but not to print,
compare, hash or store."""

MAX_CPU_S = 5.0
"""CPU seconds one evaluation may use; a template inside a node also stops at the node's
deadline (its ``timeout_s``)."""

_CLOCK_MASK = 255
"""Every 256 comprehension steps (and calls) the evaluator looks at the CPU budget and the
deadline: only those repeat, everything else is bounded by the expression's length."""

_TEMPLATE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)


class _Fault(Exception):
    """An evaluation failure whose message is already the cause to show."""


def _limit(what: str) -> _Fault:
    return _Fault(f"refused: {what}")


# ---------------------------------------------------------------------------------------------
# Bounded operators and helpers


def _seq_len(value: Any) -> int | None:
    if isinstance(value, (str, bytes, list, tuple)):
        return len(value)
    return None


def _add(a: Any, b: Any) -> Any:
    la, lb = _seq_len(a), _seq_len(b)
    if la is not None and lb is not None and la + lb > MAX_SEQUENCE:
        raise _limit(f"the sum would have {la + lb} items (limit {MAX_SEQUENCE})")
    return a + b


def _mult(a: Any, b: Any) -> Any:
    for seq, n in ((a, b), (b, a)):
        size = _seq_len(seq)
        if size is not None and isinstance(n, int) and size * n > MAX_SEQUENCE:
            raise _limit(f"repeating would build {size * n} items (limit {MAX_SEQUENCE})")
        if isinstance(seq, (list, tuple)) and isinstance(n, int) and n > 1:
            if weight(seq, MAX_EXPANDED // n + 1, {}) * n > MAX_EXPANDED:
                raise _limit(f"repeating would make a value of over {MAX_EXPANDED} elements "
                             "and characters")
    if isinstance(a, int) and isinstance(b, int) and a.bit_length() + b.bit_length() > MAX_INT_BITS:
        raise _limit(f"the product would have over {MAX_INT_BITS} bits")
    return a * b


def _power(a: Any, b: Any) -> Any:
    if isinstance(a, int) and isinstance(b, int) and b > 0 and abs(a) > 1:
        bits = b * (abs(a).bit_length() - 1)
        if bits > MAX_INT_BITS:
            raise _limit(f"the power would have about {bits} bits (limit {MAX_INT_BITS})")
    return a**b


def _lshift(a: Any, b: Any) -> Any:
    if isinstance(a, int) and isinstance(b, int) and a.bit_length() + b > MAX_INT_BITS:
        raise _limit(f"the shift would have over {MAX_INT_BITS} bits")
    return a << b


_SHORT_TEXT = (int, float, bool, type(None))
"""Types whose text is short (an int's is capped by Python at 4300 digits)."""


def _checked_text(value: Any, what: str, mode: str = "str") -> None:
    """Refuse ``value`` when its text (``str``, ``repr`` or JSON) would be over the limit."""
    if isinstance(value, _SHORT_TEXT) or (isinstance(value, str) and len(value) * 12 <
                                          MAX_SEQUENCE):
        return
    size = text_size(value, MAX_SEQUENCE, mode=mode)
    if size > MAX_SEQUENCE:
        raise _limit(f"{what} would build over {MAX_SEQUENCE} characters of text")


def _check_converted(value: Any, conversion: str) -> None:
    if conversion in "sra":
        _checked_text(value, f"'%{conversion}' of a {_type_name(value)}",
                      "str" if conversion == "s" else "repr")


def _mod(a: Any, b: Any) -> Any:
    if isinstance(a, (str, bytes)):
        try:
            return percent_format(a, b, max_width=MAX_FORMAT_WIDTH,
                                  check_value=_check_converted)
        except FormatRefused as exc:
            raise _limit(str(exc)) from None
    return a % b


def _join(sep: str, items: Iterable[Any]) -> str:
    items = list(items)
    size = len(sep) * max(len(items) - 1, 0) + sum(len(i) for i in items if isinstance(i, str))
    if size > MAX_SEQUENCE:
        raise _limit(f"join would build {size} characters (limit {MAX_SEQUENCE})")
    return sep.join(items)


def _replace(text: str, old: str, new: str, count: int = -1) -> str:
    hits = text.count(old) if old else len(text) + 1
    if count >= 0:
        hits = min(hits, count)
    size = len(text) + hits * (len(new) - len(old))
    if size > MAX_SEQUENCE:
        raise _limit(f"replace would build {size} characters (limit {MAX_SEQUENCE})")
    return text.replace(old, new, count)


def _padder(name: str) -> Callable[..., str]:
    method = getattr(str, name)

    def pad(text: str, width: int, *fill: str) -> str:
        if isinstance(width, int) and width > MAX_SEQUENCE:
            raise _limit(f"{name} width {width} is over {MAX_SEQUENCE}")
        return method(text, width, *fill)

    return pad


def _range(*args: int) -> range:
    r = range(*args)
    try:
        size = len(r)
    except OverflowError:
        size = MAX_ITERATIONS + 1
    if size > MAX_ITERATIONS:
        raise _limit(f"range of {size} numbers (limit {MAX_ITERATIONS})")
    return r


def _round(number: Any, ndigits: int | None = None) -> Any:
    if ndigits is None:
        return round(number)
    if abs(ndigits) > MAX_FORMAT_WIDTH:
        raise _limit(f"round to {ndigits} digits")
    return round(number, ndigits)


def _sum(values: Iterable[Any], start: Any = 0) -> Any:
    if not isinstance(start, (int, float)):
        raise _Fault("TypeError: sum() adds numbers; join text with ''.join(...)")
    return sum(values, start)


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat()


def _json_dumps(value: Any, indent: int | None = None) -> str:
    if indent is not None and not 0 <= indent <= 16:
        raise _limit(f"json_dumps indent {indent}")
    size = text_size(value, MAX_SEQUENCE, mode="json", indent=indent or 0)
    if size > MAX_SEQUENCE:
        raise _limit(f"json_dumps would build over {MAX_SEQUENCE} characters")
    return json.dumps(json_safe(value), indent=indent, ensure_ascii=False, sort_keys=False)


def _str(*args: Any, **kwargs: Any) -> str:
    if len(args) == 1 and not kwargs:
        _checked_text(args[0], f"str() of a {_type_name(args[0])}")
    return str(*args, **kwargs)


def _int(*args: Any, **kwargs: Any) -> int:
    value = int(*args, **kwargs)
    if value.bit_length() > MAX_INT_BITS:
        raise _limit(f"int() would have {value.bit_length()} bits (limit {MAX_INT_BITS})")
    return value


_RESUME_URL: contextvars.ContextVar[Callable[[str], str] | None] = contextvars.ContextVar(
    "nexusflow_resume_url", default=None)


def _resume_url(node_id: str) -> str:
    provider = _RESUME_URL.get()
    if provider is None:
        raise _Fault("resume_url() is only available in the config of a node of a run (it "
                     "gives a wait node's callback URL)")
    if not isinstance(node_id, str):
        raise _Fault(f"resume_url() takes the id of a wait node, not a {_type_name(node_id)}")
    return provider(node_id)


@contextmanager
def resume_urls(provider: Callable[[str], str] | None) -> Iterator[None]:
    """Let ``resume_url('W')`` in templates call ``provider`` (the worker's, for one node)."""
    token = _RESUME_URL.set(provider)
    try:
        yield
    finally:
        _RESUME_URL.reset(token)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "abs": abs,
    "all": all,
    "any": any,
    "bool": bool,
    "dict": dict,
    "enumerate": enumerate,
    "float": float,
    "int": _int,
    "json_dumps": _json_dumps,
    "json_loads": json.loads,
    "len": len,
    "list": list,
    "max": max,
    "min": min,
    "now": _now,
    "range": _range,
    "resume_url": _resume_url,
    "reversed": reversed,
    "round": _round,
    "set": set,
    "sorted": sorted,
    "str": _str,
    "sum": _sum,
    "tuple": tuple,
    "zip": zip,
}
"""Helper functions every expression may call."""

# Read-only methods per exact type; a few are replaced by bounded versions.
_METHODS: dict[type, frozenset[str]] = {
    str: frozenset(
        "capitalize casefold center count endswith find index isalnum isalpha isascii "
        "isdecimal isdigit isidentifier islower isnumeric isspace istitle isupper join ljust "
        "lower lstrip partition removeprefix removesuffix replace rfind rindex rjust rpartition "
        "rsplit rstrip split splitlines startswith strip swapcase title upper zfill".split()
    ),
    dict: frozenset({"get", "keys", "values", "items", "copy"}),
    list: frozenset({"index", "count", "copy"}),
    tuple: frozenset({"index", "count"}),
    set: frozenset(
        "union intersection difference symmetric_difference issubset issuperset isdisjoint "
        "copy".split()
    ),
    int: frozenset({"bit_length", "real", "imag", "numerator", "denominator"}),
    float: frozenset({"is_integer", "real", "imag"}),
    bool: frozenset(),
}
_BOUNDED_METHODS: dict[tuple[type, str], Callable[..., Any]] = {
    (str, "join"): _join,
    (str, "replace"): _replace,
    **{(str, name): _padder(name) for name in ("center", "ljust", "rjust", "zfill")},
}

_BINARY_OPERATORS = (
    ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.LShift, ast.RShift,
    ast.BitOr, ast.BitXor, ast.BitAnd,
)
_ALLOWED_NODES: tuple[type, ...] = (
    ast.Expression, ast.Constant, ast.Name, ast.Load, ast.Store, ast.UnaryOp, ast.BinOp,
    ast.BoolOp, ast.Compare, ast.IfExp, ast.Call, ast.keyword, ast.Subscript, ast.Attribute,
    ast.Slice, ast.JoinedStr, ast.FormattedValue, ast.Dict, ast.List, ast.Tuple, ast.Set,
    ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.comprehension, ast.Starred,
    ast.boolop, ast.cmpop, ast.unaryop, *_BINARY_OPERATORS,
)
_ALLOCATING = frozenset({
    ast.Call, ast.BinOp, ast.List, ast.Tuple, ast.Dict, ast.Set, ast.ListComp, ast.SetComp,
    ast.DictComp, ast.GeneratorExp, ast.JoinedStr,
})


# ---------------------------------------------------------------------------------------------
# Parsing (cached) and the static check


def _describe(node: ast.AST) -> str:
    names = {
        "Lambda": "lambda", "NamedExpr": "':=' assignment", "Await": "await",
        "Yield": "yield", "YieldFrom": "yield", "MatMult": "the @ operator",
    }
    return names.get(type(node).__name__, type(node).__name__)


def _static_check(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED_NODES):
            raise _Fault(f"refused: {_describe(node)} is not allowed in expressions")
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            raise _Fault(f"refused: attribute {node.attr!r} (names starting with '_' are private)")
        if isinstance(node, ast.comprehension) and node.is_async:
            raise _Fault("refused: async comprehensions are not allowed")


@functools.lru_cache(maxsize=4096)
def _parse(expression: str) -> ast.AST:
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise _Fault(f"refused: {len(expression)} characters (limit {MAX_EXPRESSION_LENGTH})")
    source = expression.strip()
    if not source:
        raise _Fault("the expression is empty")
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        try:  # let an expression span lines without the author adding parentheses
            tree = ast.parse(f"(\n{source}\n)", mode="eval")
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            raise _Fault(
                f"SyntaxError: {exc.msg} (line {exc.lineno}, column {exc.offset})"
            ) from None
    except ValueError as exc:
        raise _Fault(f"SyntaxError: {exc}") from None
    except (RecursionError, MemoryError) as exc:
        raise _Fault(
            f"refused: the expression nests too deeply to parse ({type(exc).__name__})"
        ) from None
    _static_check(tree)
    return tree.body


# ---------------------------------------------------------------------------------------------
# The evaluator


def _type_name(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", type(None): "None"}.get(
        type(value), type(value).__name__
    )


def _keys_hint(container: Any) -> str:
    if isinstance(container, Mapping):
        keys = list(container)[:10]
        more = ", ..." if len(container) > 10 else ""
        listed = ", ".join(repr(k) for k in keys)
        return f" (keys: {listed}{more})" if keys else " (it is empty)"
    return ""


@functools.lru_cache(maxsize=1)
def _evaluator_class() -> type:
    import simpleeval

    operators = dict(simpleeval.DEFAULT_OPERATORS)
    operators.update({
        ast.Add: _add, ast.Mult: _mult, ast.Pow: _power, ast.LShift: _lshift, ast.Mod: _mod,
    })

    class Evaluator(simpleeval.EvalWithCompoundTypes):
        """simpleeval with our whitelist, bounded sizes, scoped comprehensions, clear errors."""

        def __init__(self) -> None:
            super().__init__(operators=operators, functions=dict(FUNCTIONS), names={})
            self.nodes.update({
                ast.Name: self._name,
                ast.Call: self._call,
                ast.Attribute: self._attribute,
                ast.Subscript: self._subscript,
                ast.FormattedValue: self._formatted,
                ast.Tuple: self._tuple,
                ast.Set: self._set,
                ast.ListComp: self._comprehension,
                ast.SetComp: self._comprehension,
                ast.DictComp: self._comprehension,
                ast.GeneratorExp: self._comprehension,
            })
            self.busy = False
            self._scopes: list[dict[str, Any]] = []
            self._steps = 0
            self._allocated = 0

        def run(self, tree: ast.AST, names: Mapping[str, Any],
                deadline: float | None = None) -> Any:
            self.names = names
            self._scopes = []
            self._steps = 0
            self._clock = 0
            self._allocated = 0
            self._sizes: dict[int, tuple[Any, int]] = {}
            self._cpu_end = time.thread_time() + MAX_CPU_S
            self._deadline = deadline
            self.busy = True
            try:
                return self._eval(tree)
            finally:
                self.busy = False
                self.names = {}
                self._scopes = []
                self._sizes = {}

        def _eval(self, node: ast.AST) -> Any:
            handler = self.nodes.get(type(node))
            if handler is None:
                raise _Fault(f"refused: {_describe(node)} is not allowed in expressions")
            result = handler(node)
            if type(node) in _ALLOCATING and hasattr(result, "__len__"):
                self._allocated += len(result)
                if self._allocated > MAX_ALLOCATED:
                    raise _limit(f"the expression built over {MAX_ALLOCATED} items in total")
                if isinstance(result, (list, tuple, dict, set, frozenset)) and \
                        weight(result, MAX_EXPANDED, self._sizes) > MAX_EXPANDED:
                    raise _limit(f"the expression built a value of over {MAX_EXPANDED} elements "
                                 "and characters (a value repeated many times)")
            return result

        def _check_time(self) -> None:
            if time.thread_time() > self._cpu_end:
                raise _limit(f"the expression used over {MAX_CPU_S:g} s of CPU time")
            if self._deadline is not None and time.monotonic() > self._deadline:
                raise _Fault("stopped: the node's timeout_s ran out while evaluating")

        def _name(self, node: ast.Name) -> Any:
            for scope in reversed(self._scopes):
                if node.id in scope:
                    return scope[node.id]
            if node.id in self.names:
                return self.names[node.id]
            if node.id in self.functions:
                return self.functions[node.id]
            given = ", ".join(sorted(self.names)) or "none"
            raise _Fault(f"NameError: name {node.id!r} is not defined (names: {given})")

        def _call(self, node: ast.Call) -> Any:
            self._clock += 1
            if not self._clock & _CLOCK_MASK:
                self._check_time()
            if isinstance(node.func, ast.Name) and not any(node.func.id in s for s in self._scopes):
                func = self.functions.get(node.func.id)
                if func is None:
                    raise _Fault(
                        f"NameError: function {node.func.id!r} is not available "
                        f"(functions: {', '.join(sorted(self.functions))})"
                    )
            elif isinstance(node.func, ast.Attribute):
                func = self._attribute(node.func)
                if not callable(func):
                    raise _Fault(f"TypeError: {ast.unparse(node.func)} is not a method")
            else:
                raise _Fault("refused: only helper functions and methods can be called")
            args: list[Any] = []
            for arg in node.args:
                if isinstance(arg, ast.Starred):
                    args.extend(self._eval(arg.value))
                else:
                    args.append(self._eval(arg))
            kwargs: dict[str, Any] = {}
            for kw in node.keywords:
                if kw.arg is None:
                    kwargs.update(self._eval(kw.value))
                else:
                    kwargs[kw.arg] = self._eval(kw.value)
            return func(*args, **kwargs)

        def _attribute(self, node: ast.Attribute) -> Any:
            attr = node.attr
            if attr.startswith("_"):
                raise _Fault(f"refused: attribute {attr!r} (names starting with '_' are private)")
            obj = self._eval(node.value)
            kind = type(obj)
            if attr in _METHODS.get(kind, ()):
                bounded = _BOUNDED_METHODS.get((kind, attr))
                return functools.partial(bounded, obj) if bounded else getattr(obj, attr)
            if isinstance(obj, Mapping):
                if attr in obj:
                    return obj[attr]
                if hasattr(dict, attr):
                    raise _Fault(f"refused: method {attr!r} of an object is not available")
                raise _Fault(
                    f"KeyError: {ast.unparse(node.value)} has no key {attr!r}{_keys_hint(obj)}"
                )
            raise _Fault(f"refused: attribute {attr!r} of a {_type_name(obj)} is not available")

        def _subscript(self, node: ast.Subscript) -> Any:
            container = self._eval(node.value)
            key = self._eval(node.slice)
            try:
                return container[key]
            except KeyError:
                where = ast.unparse(node.value)
                raise _Fault(
                    f"KeyError: {where} has no key {key!r}{_keys_hint(container)}"
                ) from None
            except IndexError:
                where = ast.unparse(node.value)
                raise _Fault(
                    f"IndexError: index {key!r} is out of range for {where} "
                    f"(length {len(container)})"
                ) from None
            except TypeError as exc:
                where = ast.unparse(node.value)
                raise _Fault(
                    f"TypeError: cannot index {where} (a {_type_name(container)}) "
                    f"with {key!r}: {exc}"
                ) from None

        def _formatted(self, node: ast.FormattedValue) -> str:
            value = self._eval(node.value)
            what = f"the f-string field {{{ast.unparse(node.value)[:60]}}}"
            if node.conversion in (ord("r"), ord("a")):
                _checked_text(value, what, "repr")
                value = repr(value) if node.conversion == ord("r") else ascii(value)
            spec = "" if node.format_spec is None else self._eval(node.format_spec)
            if not isinstance(spec, str):
                raise _Fault("TypeError: a format spec must be text")
            try:
                width, precision = format_spec_numbers(spec)
            except FormatRefused as exc:
                raise _limit(str(exc)) from None
            for number, name in ((width, "width"), (precision, "precision")):
                if number is not None and number > MAX_FORMAT_WIDTH:
                    raise _limit(f"format {name} {number} is over {MAX_FORMAT_WIDTH}")
            _checked_text(value, what)
            return format(value, spec)

        def _elements(self, elts: list[ast.expr]) -> list[Any]:
            out: list[Any] = []
            for item in elts:
                if isinstance(item, ast.Starred):
                    out.extend(self._eval(item.value))
                else:
                    out.append(self._eval(item))
            return out

        def _tuple(self, node: ast.Tuple) -> tuple[Any, ...]:
            return tuple(self._elements(node.elts))

        def _set(self, node: ast.Set) -> set[Any]:
            return set(self._elements(node.elts))

        def _comprehension(self, node: Any) -> Any:
            out: Any = {} if isinstance(node, ast.DictComp) else []
            scope: dict[str, Any] = {}
            self._scopes.append(scope)
            try:
                self._generate(node, 0, scope, out)
            finally:
                self._scopes.pop()
            return set(out) if isinstance(node, ast.SetComp) else out

        def _generate(self, node: Any, level: int, scope: dict[str, Any], out: Any) -> None:
            generator = node.generators[level]
            for item in self._eval(generator.iter):
                steps = self._steps = self._steps + 1
                if steps > MAX_ITERATIONS:
                    raise _limit(f"comprehensions ran over {MAX_ITERATIONS} steps")
                if not steps & _CLOCK_MASK:
                    self._check_time()
                self._bind(generator.target, item, scope)
                if not all(self._eval(cond) for cond in generator.ifs):
                    continue
                if level + 1 < len(node.generators):
                    self._generate(node, level + 1, scope, out)
                elif isinstance(node, ast.DictComp):
                    out[self._eval(node.key)] = self._eval(node.value)
                else:
                    out.append(self._eval(node.elt))

        def _bind(self, target: ast.AST, value: Any, scope: dict[str, Any]) -> None:
            if isinstance(target, ast.Name):
                scope[target.id] = value
                return
            if not isinstance(target, (ast.Tuple, ast.List)):
                raise _Fault(f"refused: cannot assign to {ast.unparse(target)}")
            values = list(value)
            if len(values) != len(target.elts):
                raise _Fault(
                    f"ValueError: cannot unpack {len(values)} values into {ast.unparse(target)}"
                )
            for sub, item in zip(target.elts, values, strict=True):
                self._bind(sub, item, scope)

    return Evaluator


_local = threading.local()


def _evaluator() -> Any:
    ev = getattr(_local, "evaluator", None)
    if ev is None:
        ev = _local.evaluator = _evaluator_class()()
    elif ev.busy:  # re-entered (a helper evaluating an expression): use a fresh one
        ev = _evaluator_class()()
    return ev


def _error(expression: str, where: str, cause: str) -> ExpressionError:
    shown = " ".join(str(expression).split())
    if len(shown) > 200:
        shown = shown[:197] + "..."
    place = f" at {where}" if where else ""
    err = ExpressionError(f"expression `{shown}`{place}: {cause}")
    err.expression = expression  # type: ignore[attr-defined]
    err.where = where  # type: ignore[attr-defined]
    err.cause = cause  # type: ignore[attr-defined]
    return err


def _cause(exc: BaseException) -> str:
    import simpleeval

    if isinstance(exc, _Fault):
        return str(exc)
    if isinstance(exc, RecursionError):
        return "refused: the expression nests too deeply"
    if isinstance(exc, MemoryError):
        return "refused: the expression ran out of memory"
    if isinstance(exc, simpleeval.InvalidExpression):
        return f"refused: {exc}"
    text = str(exc)
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ---------------------------------------------------------------------------------------------
# Public API


def evaluate(expression: str, names: Mapping[str, Any], *, where: str = "",
             deadline: float | None = None) -> Any:
    """Evaluate ``expression`` over ``names`` (``inputs``, ``params``) and the helper functions.

    ``where`` names the place for messages, e.g. ``"node 'C' /config/expression"``. Every
    failure, whether a syntax error, a refused construct, a limit, the CPU budget
    (``MAX_CPU_S``), the ``deadline`` (a ``time.monotonic()`` value) or an exception of the
    expression itself, raises one ``ExpressionError`` naming the place, the expression and the
    cause.
    """
    if not isinstance(expression, str):
        raise _error(repr(expression), where, f"TypeError: an expression must be a string, "
                     f"not a {_type_name(expression)}")
    try:
        tree = _parse(expression)
        return _evaluator().run(tree, names, deadline)
    except ExpressionError:
        raise
    except Exception as exc:  # the boundary around user code: one error type, cause kept
        raise _error(expression, where, _cause(exc)) from exc


def check_expression(expression: str) -> str | None:
    """Return what is wrong with ``expression`` without running it (syntax, refused parts)."""
    if not isinstance(expression, str):
        return f"an expression must be a string, not a {_type_name(expression)}"
    try:
        _parse(expression)
    except _Fault as exc:
        return str(exc)
    return None


def _pointer_part(key: Any) -> str:
    return "/" + str(key).replace("~", "~0").replace("/", "~1")


def _is_secret(value: Mapping[str, Any]) -> bool:
    return len(value) == 1 and "$secret" in value


MAX_RENDERED = 16_000_000
"""Most characters of text (as JSON) that the templates of one config may render in total."""


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list, tuple)):
        _checked_text(value, f"writing a {_type_name(value)} into the text", "json")
        return json.dumps(json_safe(value), ensure_ascii=False)
    _checked_text(value, f"writing a {_type_name(value)} into the text")
    return str(value)


class _Renderer:
    """Renders the templates of one config, with one deadline and one budget of text."""

    def __init__(self, names: Mapping[str, Any], where: str, deadline: float | None) -> None:
        self.names = names
        self.where = where
        self.deadline = deadline
        self.used = 0
        self.sizes: dict[int, tuple[Any, int]] = {}

    def _count(self, size: int, expression: str, where: str) -> None:
        self.used += size
        if self.used > MAX_RENDERED:
            raise _error(expression, where, f"refused: the templates of this config render "
                         f"over {MAX_RENDERED} characters")

    def string(self, text: str, where: str) -> Any:
        matches = list(_TEMPLATE.finditer(text))
        if not matches:
            return text
        if len(matches) == 1 and matches[0].group(0) == text.strip():
            expression = matches[0].group(1)
            value = evaluate(expression, self.names, where=where, deadline=self.deadline)
            self._count(text_size(value, MAX_RENDERED, mode="json", memo=self.sizes),
                        expression, where)
            return value
        parts: list[str] = []
        last = 0
        for m in matches:
            parts.append(text[last : m.start()])
            value = evaluate(m.group(1), self.names, where=where, deadline=self.deadline)
            try:
                part = _as_text(value)
            except _Fault as exc:
                raise _error(m.group(1), where, str(exc)) from None
            self._count(len(part), m.group(1), where)
            parts.append(part)
            last = m.end()
        parts.append(text[last:])
        return "".join(parts)

    def value(self, value: Any, pointer: str) -> Any:
        if isinstance(value, str):
            return self.string(value, self.where + pointer) if "{{" in value else value
        if isinstance(value, Mapping):
            if _is_secret(value):
                return value
            return {k: self.value(v, pointer + _pointer_part(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.value(v, f"{pointer}/{i}") for i, v in enumerate(value)]
        return value


def render_templates(
    value: Any, names: Mapping[str, Any], *, exempt: Iterable[str] = (), where: str = "",
    deadline: float | None = None,
) -> Any:
    """Return ``value`` with every ``{{ expr }}`` inside its strings evaluated.

    A string that is exactly one template keeps the value's type (``"{{ params['n'] }}"`` gives
    the number); otherwise values are written into the text (objects and lists as JSON).
    Top-level keys in ``exempt`` and ``{"$secret": NAME}`` references are left untouched.
    Error messages name ``where`` followed by the JSON pointer inside ``value``, so pass e.g.
    ``where="node 'B' /config"``. ``deadline`` (a ``time.monotonic()`` value, the node's) stops
    every evaluation that runs past it; all templates together render at most
    ``MAX_RENDERED`` characters.
    """
    renderer = _Renderer(names, where, deadline)
    skip = frozenset(exempt)
    if isinstance(value, Mapping) and not _is_secret(value):
        return {
            k: v if k in skip else renderer.value(v, _pointer_part(k))
            for k, v in value.items()
        }
    return renderer.value(value, "")


def _template_faults(value: Any, pointer: str, out: list[tuple[str, str]]) -> None:
    if isinstance(value, str):
        if "{{" not in value and "}}" not in value:
            return
        rest = _TEMPLATE.sub("", value)
        if "{{" in rest:
            out.append((pointer, "a '{{' has no matching '}}'"))
        for m in _TEMPLATE.finditer(value):
            problem = check_expression(m.group(1))
            if problem:
                out.append((pointer, f"template {{{{{m.group(1)}}}}}: {problem}"))
    elif isinstance(value, Mapping):
        if not _is_secret(value):
            for k, v in value.items():
                _template_faults(v, pointer + _pointer_part(k), out)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _template_faults(v, f"{pointer}/{i}", out)


def template_errors(value: Any, exempt: Iterable[str] = ()) -> list[tuple[str, str]]:
    """Return ``(JSON pointer inside value, message)`` for each template that does not parse."""
    out: list[tuple[str, str]] = []
    skip = frozenset(exempt)
    if isinstance(value, Mapping) and not _is_secret(value):
        for k, v in value.items():
            if k not in skip:
                _template_faults(v, _pointer_part(k), out)
    else:
        _template_faults(value, "", out)
    return out


def json_safe(value: Any) -> Any:
    """Return ``value`` as JSON-ready data (tuples and sets as lists, dates as ISO text ...)."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, Mapping):
        return {k if isinstance(k, str) else str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (set, frozenset)):
        items = [json_safe(v) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return items
    return _json_scalar(value)


def _json_scalar(value: Any) -> Any:
    import base64
    import datetime as dt
    import decimal
    import uuid

    if isinstance(value, decimal.Decimal):
        if value.is_finite() and value == value.to_integral_value():
            return int(value)
        return float(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, Iterable):  # ranges, zip, enumerate, dict views
        return [json_safe(v) for v in value]
    return str(value)


__all__ = [
    "FUNCTIONS",
    "check_expression",
    "evaluate",
    "json_safe",
    "render_templates",
    "resume_urls",
    "template_errors",
]
