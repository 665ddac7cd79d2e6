"""How big a piece of text will be, known before it is built.

The expression evaluator refuses work whose result would be too big *before* Python builds
it: a format width of a billion characters, ``str()`` of a list that repeats one large
string a million times. The sizes come from the parsed format and from a walk of the value,
never from a regular expression over the format text (the old ``%`` check stopped at the
first ``)`` of a key like ``%(a(b))1000000000s``).

* ``percent_format`` does ``fmt % values`` (printf style, str or bytes) itself: it parses
  each conversion the way CPython does, checks its width and precision, and hands CPython only
  single conversions it built (no key, no ``*``), so no part of the format is read
  differently by the check and by the formatting.
* ``format_spec_numbers`` parses a format spec (``f'{x:>10.2f}'``) completely and returns
  its width and precision; a spec it cannot parse is refused (Python would refuse it too).
* ``text_size`` bounds the length of ``str()``, ``repr()`` or JSON of a value, counting a
  value that appears many times once per appearance (references cost nothing to make, their
  text does), and stops as soon as a limit is passed, so measuring costs at most ``limit``
  steps.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

_FLAGS = "-+ #0"
_LENGTH_MODIFIERS = "hlL"
_CONVERSIONS = frozenset("acdefgiorsuxEFGX")
_BYTES_CONVERSIONS = _CONVERSIONS | {"b"}
_ALIGN = "<>=^"


class FormatRefused(ValueError):
    """A format asks for more than the caller allows (or for what cannot be checked)."""


def _number(text: str, what: str, limit: int) -> int:
    if len(text) > 9 or int(text) > limit:
        raise FormatRefused(f"format {what} {text[:12]} is over {limit}")
    return int(text)


def percent_format(fmt: str | bytes, values: Any, *, max_width: int,
                   check_value: Callable[[Any, str], None] | None = None) -> str | bytes:
    """Return ``fmt % values`` with every width and precision at most ``max_width``.

    ``check_value(value, conversion)`` runs before a value is converted (to refuse one whose
    text would be too big). Errors are the ones ``%`` itself raises (``TypeError``,
    ``ValueError``, ``KeyError``), or ``FormatRefused``.
    """
    is_bytes = isinstance(fmt, bytes)
    text: str = fmt.decode("latin-1") if isinstance(fmt, bytes) else fmt
    not_mapping = (tuple, str, bytes, bytearray) if is_bytes else (tuple, str)
    mapping = values if (hasattr(type(values), "__getitem__")
                         and not isinstance(values, not_mapping)) else None
    args = values if isinstance(values, tuple) else (values,)
    argidx = 0
    out: list[Any] = []
    n = len(text)
    i = 0

    def piece(s: str) -> Any:
        return s.encode("latin-1") if is_bytes else s

    while i < n:
        j = text.find("%", i)
        if j < 0:
            out.append(piece(text[i:]))
            break
        out.append(piece(text[i:j]))
        i = j + 1
        if i >= n:
            raise ValueError("incomplete format")
        if text[i] == "%":
            out.append(piece("%"))
            i += 1
            continue
        key = None
        if text[i] == "(":
            if mapping is None:
                raise TypeError("format requires a mapping")
            depth, start = 1, i + 1
            i += 1
            while depth and i < n:
                if text[i] == ")":
                    depth -= 1
                elif text[i] == "(":
                    depth += 1
                i += 1
            if depth:
                raise ValueError("incomplete format key")
            key = text[start : i - 1]
        flags_start = i
        while i < n and text[i] in _FLAGS:
            i += 1
        flags = text[flags_start:i]
        width = precision = ""
        if i < n and text[i] == "*":
            raise FormatRefused("'*' widths are not allowed in % formatting")
        start = i
        while i < n and "0" <= text[i] <= "9":
            i += 1
        width = text[start:i]
        has_precision = i < n and text[i] == "."
        if has_precision:
            i += 1
            if i < n and text[i] == "*":
                raise FormatRefused("'*' precisions are not allowed in % formatting")
            start = i
            while i < n and "0" <= text[i] <= "9":
                i += 1
            precision = text[start:i]
        if i >= n:
            raise ValueError("incomplete format")
        if text[i] in _LENGTH_MODIFIERS:
            i += 1
            if i >= n:
                raise ValueError("incomplete format")
        conversion = text[i]
        i += 1
        if width:
            _number(width, "width", max_width)
        if precision:
            _number(precision, "precision", max_width)
        if key is not None:
            assert mapping is not None  # a key was only read with a mapping (above)
            value = mapping[piece(key)] if is_bytes else mapping[key]
        else:
            if argidx >= len(args):
                raise TypeError("not enough arguments for format string")
            value = args[argidx]
            argidx += 1
        if conversion not in (_BYTES_CONVERSIONS if is_bytes else _CONVERSIONS):
            raise ValueError(f"unsupported format character {conversion!r} at index {i - 1}")
        if check_value is not None:
            check_value(value, conversion)
        spec = "%" + flags + width + ("." + precision if has_precision else "") + conversion
        out.append(piece(spec) % (value,))
    if mapping is None and argidx < len(args):
        raise TypeError(f"not all arguments converted during {'bytes' if is_bytes else 'string'}"
                        " formatting")
    return (b"" if is_bytes else "").join(out)


def format_spec_numbers(spec: str) -> tuple[int | None, int | None]:
    """Parse a format spec (``[[fill]align][sign][z][#][0][width][grouping][.precision][type]``)
    and return ``(width, precision)``; raise ``FormatRefused`` for one that does not parse."""
    i, n = 0, len(spec)
    if n >= 2 and spec[1] in _ALIGN:
        i = 2
    elif n >= 1 and spec[0] in _ALIGN:
        i = 1
    for optional in ("+- ", "z", "#", "0"):
        if i < n and spec[i] in optional:
            i += 1
    start = i
    while i < n and spec[i].isdecimal():  # Python reads any Unicode decimal digit here
        i += 1
    width = spec[start:i]
    if i < n and spec[i] in ",_":
        i += 1
    precision = None
    if i < n and spec[i] == ".":
        i += 1
        start = i
        while i < n and spec[i].isdecimal():
            i += 1
        precision = spec[start:i]
        if not precision:
            raise FormatRefused(f"format spec {spec[:40]!r} has no precision after '.'")
    if n - i > 1:
        raise FormatRefused(f"format spec {spec[:40]!r} is not one this evaluator understands")

    def number(digits: str) -> int:
        return int(digits) if len(digits) < 10 else 10**10

    return (number(width) if width else None,
            number(precision) if precision is not None else None)


def _str_size(s: str, mode: str, nested: bool) -> int:
    if mode == "json":
        if s.isascii() and s.isprintable():
            return len(s) + 2 + s.count('"') + s.count("\\")
        return len(json.dumps(s))
    if mode == "str" and not nested:
        return len(s)
    if s.isascii() and s.isprintable():
        return len(s) + 2 + s.count("'") + s.count("\\")
    return len(repr(s))


def _scalar_size(value: Any, mode: str, nested: bool) -> int:
    if isinstance(value, str):
        return _str_size(value, mode, nested)
    if isinstance(value, bool) or value is None:
        return 5
    if isinstance(value, int):
        bits = value.bit_length()
        return len(str(value)) if bits < 60 else bits * 30103 // 100000 + 2
    if isinstance(value, float):
        return len(repr(value))
    if isinstance(value, (bytes, bytearray)):
        return 4 * len(value) + 3 if mode != "json" else 4 * len(value) // 3 + 4
    return 100  # a range, a zip, a date...: short


_CONTAINERS = (list, tuple, dict, set, frozenset)


def text_size(value: Any, limit: int, *, mode: str = "str",
              memo: dict[int, tuple[Any, int]] | None = None, indent: int = 0,
              compact: bool = False) -> int:
    """Return (an upper bound of) the length of ``str(value)`` (``mode="str"``),
    ``repr(value)`` (``"repr"``) or its JSON text (``"json"``, ``indent`` as in
    ``json.dumps``, ``compact`` for the separators ``(",", ":")``); past ``limit`` it stops
    and returns a number over ``limit``.

    ``memo`` (object id -> (object, size)) keeps the sizes of containers across calls, so
    a value that appears many times is walked once; use one memo per mode and indent.
    """
    sep = 1 if compact else 2
    return _size(value, limit, mode, {} if memo is None else memo, indent, 0, False, sep)


def _size(value: Any, budget: int, mode: str, memo: dict[int, tuple[Any, int]], indent: int,
          depth: int, nested: bool, sep: int = 2) -> int:
    if not isinstance(value, _CONTAINERS):
        return _scalar_size(value, mode, nested)
    seen = memo.get(id(value))
    if seen is not None and seen[0] is value:
        return seen[1]
    per_item = sep + (indent * (depth + 1) + 1 if indent else 0)
    size = 2
    if isinstance(value, Mapping):
        for key, val in value.items():
            size += per_item + sep + _size(key, budget - size, mode, memo, indent, depth + 1,
                                           True, sep)
            size += _size(val, budget - size, mode, memo, indent, depth + 1, True, sep)
            if size > budget:
                return size
    else:
        for val in value:
            size += per_item + _size(val, budget - size, mode, memo, indent, depth + 1, True,
                                     sep)
            if size > budget:
                return size
    memo[id(value)] = (value, size)
    return size


_SMALL = (float, bool, type(None))
_SMALL_KINDS = frozenset(_SMALL)
_INTS = frozenset({int, bool})
_STRS = frozenset({str})


def weight(value: Any, limit: int, memo: dict[int, tuple[Any, int]]) -> int:
    """Return the elements plus characters (plus digits) of a container, counting a value that
    appears many times once per appearance; past ``limit`` it stops and returns more.

    This is what comparing, hashing or copying the value costs, and roughly its text. It is
    cheaper than ``text_size`` (no escaping is worked out) because the evaluator measures every
    container it builds; ``memo`` keeps the sizes of those already measured.
    """
    seen = memo.get(id(value))
    if seen is not None and seen[0] is value:
        return seen[1]
    pairs = isinstance(value, Mapping)
    if not pairs:  # the common flat cases at C speed
        kinds = set(map(type, value))
        flat = None
        if kinds <= _INTS:
            flat = len(value) + sum(map(int.bit_length, value)) // 3
        elif kinds <= _SMALL_KINDS:
            flat = len(value)
        elif kinds == _STRS:
            flat = len(value) + sum(map(len, value))
        if flat is not None:
            memo[id(value)] = (value, flat + 1)
            return flat + 1
    size = 1
    get = memo.get
    for item in (value.items() if pairs else value):
        if pairs:
            key, item = item
            size += len(key) if type(key) is str else weight(key, limit - size, memo) \
                if isinstance(key, tuple) else 1
        kind = type(item)
        if kind is str:
            size += len(item) + 1
        elif kind is int:
            size += item.bit_length() // 3 + 1
        elif kind in _SMALL:
            size += 1
        elif isinstance(item, _CONTAINERS):
            known = get(id(item))
            size += known[1] if known is not None and known[0] is item else \
                weight(item, limit - size, memo)
        else:
            size += 8
        if size > limit:
            return size
    memo[id(value)] = (value, size)
    return size


__all__ = ["FormatRefused", "format_spec_numbers", "percent_format", "text_size", "weight"]
