"""One masking path for everything a run records: secret values never reach the record.

A run's record (node outputs, the input and log of each attempt, errors, events, and every
answer built from them) goes through one :class:`Masker` holding the values of **every secret
the run's flow names**, not only those of the node being recorded: a later node that never
resolved a secret can still hold its value (a parent's output, an echo from a server). The
worker that records a node resolves those values itself from the encrypted store
(:class:`RunSecrets`, a short per-process cache), so no value ever travels through Redis or
lands in PostgreSQL in the clear.

What is masked: each value as it is, JSON-escaped (``"`` and ``\\`` and non-ASCII escaped),
repr-escaped (as in ``invalid literal for int() ... 'value'``), escaped twice (JSON inside an
error message, a repr inside JSON) and URL-encoded (a query parameter, upper or lower-case hex);
in strings and in the keys of objects; a number that equals a secret. What is not: values
shorter than ``MIN_MASKED_LENGTH``, and any *transformation* of a value — base64, upper-case,
a slice, a hash, one character per line. A node that passes a secret on as data has leaked it
to its children's view; pass secrets by reference instead (``{"$secret": NAME}`` in the node
that needs the value). See docs/security.md.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

MIN_MASKED_LENGTH = 3
"""Shorter values are not masked (masking ``"a"`` would garble every log line)."""

MASK = "***"

_URL_QUERY_SAFE = "!$&'()*+,;=:@/?~[]\\^|`{}"
"""What a URL keeps unencoded in a query when only the characters that must go are escaped."""

_HEX = re.compile(r"%[0-9A-F]{2}")


def _url_forms(value: str) -> set[str]:
    from urllib.parse import quote, quote_plus

    forms = {quote(value, safe=""), quote(value, safe="/"), quote_plus(value),
             quote_plus(value, safe="/"), quote(value, safe=_URL_QUERY_SAFE)}
    return forms | {_HEX.sub(lambda m: m.group(0).lower(), f) for f in forms}


def variants(value: str) -> set[str]:
    """Return the forms ``value`` takes in recorded text (see the module docstring)."""
    escaped = {json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1],
               repr(value)[1:-1], ascii(value)[1:-1], repr(value.encode())[2:-1]}
    twice = {f2 for f in escaped for f2 in (json.dumps(f)[1:-1], repr(f)[1:-1])}
    forms = {value} | escaped | twice | _url_forms(value)
    return {f for f in forms if len(f) >= MIN_MASKED_LENGTH}


class Masker:
    """Replaces known secret values with ``***`` in text and in JSON-like values."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self.values = frozenset(v for v in values
                                if isinstance(v, str) and len(v) >= MIN_MASKED_LENGTH)
        forms: set[str] = set()
        for value in self.values:
            forms |= variants(value)
        self._forms = tuple(sorted(forms))
        # Longest first: a secret that contains another is masked whole.
        self._pattern = re.compile("|".join(
            re.escape(f) for f in sorted(forms, key=lambda f: (-len(f), f)))) if forms else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def with_values(self, values: Iterable[str]) -> Masker:
        """Return a masker that also masks ``values`` (this one when they add nothing)."""
        more = {v for v in values if isinstance(v, str) and len(v) >= MIN_MASKED_LENGTH}
        return self if more <= self.values else Masker(self.values | more)

    def text(self, text: str) -> str:
        """Return ``text`` with every form of every value masked."""
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(MASK, text)

    def settled(self, text: str) -> str:
        """Return ``text`` masked, less a tail that may be the start of a value still arriving.

        For text shown while it grows (a running node's streamed log): a secret that has
        arrived only in part is not yet a match, so its beginning would show. The tail held
        back is the longest end of the text that begins some form of a value.
        """
        masked = self.text(text)
        if not self._forms or not masked:
            return masked
        last, hold = masked[-1], 0
        for form in self._forms:
            # ends of ``masked`` that are a beginning of ``form``: where form has the last char
            at = form.find(last, 0, len(form) - 1)
            while at != -1:
                if at + 1 > hold and masked.endswith(form[:at + 1]):
                    hold = at + 1
                at = form.find(last, at + 1, len(form) - 1)
        return masked[:len(masked) - hold] if hold else masked

    def value(self, value: Any) -> Any:
        """Return a copy of a JSON-like ``value`` with the values masked in strings and keys."""
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {self.text(str(k)): self.value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.value(v) for v in value]
        if isinstance(value, (int, float)) and not isinstance(value, bool) \
                and str(value) in self.values:
            return MASK
        return value


NO_MASKER = Masker()


def mask(text: str, values: Iterable[str]) -> str:
    """Return ``text`` with every occurrence of each value (in each form) replaced by ``***``."""
    return Masker(values).text(text)


def mask_value(value: Any, values: Iterable[str]) -> Any:
    """Return a copy of a JSON-like ``value`` with secret values masked inside every string."""
    return Masker(values).value(value)


def secret_refs(value: Any) -> set[str]:
    """Return the names of every ``{"$secret": NAME}`` reference inside a JSON-like value."""
    found: set[str] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            if len(item) == 1 and isinstance(item.get("$secret"), str):
                found.add(item["$secret"])
            else:
                stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return found


class RunSecrets:
    """The maskers of runs: the values of the secrets each run's flow names, kept briefly.

    ``resolve(name, run_id)`` returns a secret's value as the run may read it (a list of
    values for a connection, named ``connection:NAME``), or ``None``
    when the run could not have read it (no such secret, a group scope the run's user is not
    in): such a value never entered the run. Values live only in this process's memory, for
    ``ttl_s`` (a secret changed meanwhile is masked in both values when the node in hand
    resolved the new one; an old value a run picked up before a change is masked while cached).
    """

    def __init__(self, resolve: Callable[[str, str], str | list[str] | None], *,
                 ttl_s: float = 30.0,
                 size: int = 256) -> None:
        self._resolve = resolve
        self._ttl_s = ttl_s
        self._size = size
        self._items: OrderedDict[tuple[str, frozenset[str]], tuple[float, Masker]] = \
            OrderedDict()
        self._lock = threading.Lock()

    def masker(self, run_id: str, names: Iterable[str]) -> Masker:
        """Return the masker of run ``run_id`` whose flow names the secrets ``names``."""
        names = frozenset(names)
        if not names:
            return NO_MASKER
        key = (run_id, names)
        now = time.monotonic()
        with self._lock:
            hit = self._items.get(key)
            if hit is not None and hit[0] > now:
                self._items.move_to_end(key)
                return hit[1]
        values: list[str] = []
        for name in sorted(names):  # a connection (``connection:NAME``) has several values
            found = self._resolve(name, run_id)
            values += found if isinstance(found, list) else [] if found is None else [found]
        masker = Masker(values)
        with self._lock:
            self._items[key] = (now + self._ttl_s, masker)
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return masker


__all__ = ["MASK", "MIN_MASKED_LENGTH", "NO_MASKER", "Masker", "RunSecrets", "mask",
           "mask_value", "secret_refs", "variants"]
