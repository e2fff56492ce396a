"""Metadata filters for catalog searches, parsed from short strings.

    category=Dress          equality (text is compared case-insensitively)
    colour!=black           inequality (items without a colour match too)
    colour in (red, blue)   a set; `not in (...)` excludes one
    price<30  price>=10     numeric ranges
    status=available        available, reserved or sold
    extra.brand=Zara        a column kept in the item's `extra` data

A filter on a field the catalog's model predicts (category, colour, extra.season, ...:
`tags.TASK_FIELDS`) reads the shop's value, or where the shop gave none the confident
prediction (`tags.effective_sql`: the one rule).

Several filters all have to hold: give a list, or one text with `;` between them
(`category=Dress; price<30`, what the CLI's --filter and the web app's filter box take;
a `;` inside quotes belongs to the value). They choose the candidate items before any
vector is compared. `to_sql` turns them into one SQL WHERE clause with bound parameters (the
reference semantics); `FilterColumns` evaluates the same filters on an in-memory copy of
the metadata columns, because asking SQLite for 100,000 matching keys on every search of
a big catalog costs tens of milliseconds, while a numpy mask over a million rows costs
about one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import FashionLensError
from .tags import effective_sql, tag_sql

# Item fields that can be filtered on, and whether they hold text or numbers.
FIELDS = {"id": "text", "category": "text", "colour": "text", "size": "text",
          "price": "number", "status": "text"}
ALIASES = {"color": "colour"}
STATUSES = ("available", "reserved", "sold")
OPERATORS = ("=", "!=", "<", "<=", ">", ">=", "in", "not in")

_COMPARISON = re.compile(r"^\s*([A-Za-z_][\w.\-]*)\s*(<=|>=|!=|==|=|<|>)\s*(.*?)\s*$", re.S)
_MEMBERSHIP = re.compile(r"^\s*([A-Za-z_][\w.\-]*)\s+(not\s+in|in)\s*\((.*)\)\s*$",
                         re.S | re.I)
_EXTRA_KEY = re.compile(r"^[\w\-]+$")


class FilterError(FashionLensError):
    """A search filter that cannot be understood."""


@dataclass(frozen=True)
class Filter:
    field: str
    op: str
    value: Any
    text: str = ""

    def __str__(self) -> str:
        return self.text or f"{self.field}{self.op}{self.value}"

    @property
    def is_extra(self) -> bool:
        return self.field.startswith("extra.")


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def canonical_field(name: str, text: str) -> str:
    """The field a filter or update names, or a FilterError listing the known ones."""
    key = name.strip()
    lowered = ALIASES.get(key.lower(), key.lower())
    if lowered in FIELDS:
        return lowered
    if lowered.startswith("extra."):
        sub = key[len("extra."):]
        if _EXTRA_KEY.match(sub):
            return f"extra.{sub}"
        raise FilterError(f"filter '{text}': bad extra field name '{sub}'")
    raise FilterError(f"filter '{text}': unknown field '{name}'; fields are "
                      f"{', '.join(FIELDS)} (or extra.NAME for other columns)")


def _typed(field: str, value: str, text: str) -> str | float:
    if value == "":
        raise FilterError(f"filter '{text}': no value given for {field}")
    if FIELDS.get(field) == "number":
        try:
            return float(value)
        except ValueError:
            raise FilterError(f"filter '{text}': {field} takes a number, not '{value}'") from None
    if field == "status" and value.lower() not in STATUSES:
        raise FilterError(f"filter '{text}': unknown status '{value}'; "
                          f"statuses are {', '.join(STATUSES)}")
    return value.lower() if field == "status" else value


def make_filter(field: str, op: str, value: Any, text: str | None = None) -> Filter:
    """Check and normalise one filter given as parts."""
    text = text or f"{field}{op}{value}"
    field = canonical_field(field, text)
    op = "=" if op == "==" else " ".join(op.lower().split())
    if op not in OPERATORS:
        raise FilterError(f"filter '{text}': unknown operator '{op}'")
    if op in ("<", "<=", ">", ">=") and FIELDS.get(field, "number") != "number":
        raise FilterError(f"filter '{text}': '{op}' compares numbers, and {field} is text "
                          "(use = or in)")
    if op in ("in", "not in"):
        items = value if isinstance(value, list | tuple | set | frozenset) else [value]
        parts = [_unquote(str(v)) for v in items]
        parts = [p for p in parts if p]
        if not parts:
            raise FilterError(f"filter '{text}': empty list of values")
        return Filter(field, op, tuple(_typed(field, p, text) for p in parts), text)
    if isinstance(value, list | tuple | set | frozenset):
        raise FilterError(f"filter '{text}': a list needs 'in', e.g. {field} in (a, b)")
    if field.startswith("extra.") and op in ("<", "<=", ">", ">="):
        try:
            return Filter(field, op, float(_unquote(str(value))), text)
        except ValueError:
            raise FilterError(f"filter '{text}': '{op}' needs a number") from None
    return Filter(field, op, _typed(field, _unquote(str(value)), text), text)


def parse_filter(text: str) -> Filter:
    """Parse `field op value` (see the module docstring)."""
    if not isinstance(text, str) or not text.strip():
        raise FilterError("empty filter")
    match = _MEMBERSHIP.match(text)
    if match:
        field, op, values = match.groups()
        return make_filter(field, op, [v for v in values.split(",")], text.strip())
    match = _COMPARISON.match(text)
    if not match:
        raise FilterError(f"filter '{text}': expected FIELD=VALUE, FIELD<NUMBER, "
                          "FIELD in (A, B), ... e.g. category=Dress or price<30")
    field, op, value = match.groups()
    return make_filter(field, op, value, text.strip())


def split_filters(text: str) -> list[str]:
    """The filters of one text, split at `;` outside quotes and parentheses; empty parts
    are dropped ('category=Dress; price<30' -> ['category=Dress', 'price<30'])."""
    parts, current, quote, depth = [], [], "", 0
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "()":
            depth = max(0, depth + (1 if char == "(" else -1))
        elif char == ";" and not depth:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


def _parse_text(text: Any) -> list[Filter]:
    if not isinstance(text, str):
        return [parse_filter(text)]
    parts = split_filters(text)
    return [parse_filter(part) for part in parts] if parts else [parse_filter(text)]


def parse_filters(filters: None | str | Filter | Mapping | Iterable) -> list[Filter]:
    """Filters from a string (several separated by `;`), a list of strings/Filters, or a
    mapping.

    In a mapping a scalar means equality and a list means `in`; a key may end in an
    operator for ranges: `{"category": "Dress", "colour": ["red", "blue"], "price<": 30}`.
    """
    if filters is None:
        return []
    if isinstance(filters, Filter):
        return [filters]
    if isinstance(filters, str):
        return _parse_text(filters)
    if isinstance(filters, Mapping):
        result = []
        for key, value in filters.items():
            match = re.match(r"^\s*([A-Za-z_][\w.\-]*)\s*(<=|>=|!=|==|=|<|>)?\s*$", str(key))
            if not match:
                raise FilterError(f"filter key '{key}': expected a field name, "
                                  "optionally followed by an operator such as <")
            field, op = match.groups()
            text = f"{key}{value}" if op else f"{key}={value}"
            many = isinstance(value, list | tuple | set | frozenset)
            op = op or ("in" if many else "=")
            if op == "!=" and many:
                op = "not in"
            result.append(make_filter(field, op, value, text))
        return result
    return [g for f in filters for g in ([f] if isinstance(f, Filter) else _parse_text(f))]


def column_sql(field: str) -> str:
    """The SQL expression reading a canonical field."""
    if field.startswith("extra."):
        return f"json_extract(extra, '$.\"{field[len('extra.'):]}\"')"
    return "key" if field == "key" else field


# Text fields a model's prediction can fill where the shop gave no value (`tags`).
PREDICTABLE = ("category", "colour")


def value_sql(field: str) -> str:
    """The SQL expression of a field's value as filters see it: the shop's value, or for
    a predictable field without one, the confident prediction (`tags.effective_sql`)."""
    column = column_sql(field)
    if field in PREDICTABLE or field.startswith("extra."):
        return effective_sql(field, column)
    return column


def to_sql(filters: list[Filter]) -> tuple[str, list]:
    """A WHERE clause (without the keyword; `1` when empty) and its parameters."""
    clauses, params = [], []
    for f in filters:
        column = value_sql(f.field)
        numeric = FIELDS.get(f.field) == "number"
        if f.is_extra and f.op in ("<", "<=", ">", ">="):
            column, numeric = f"CAST({column} AS REAL)", True
        collate = "" if numeric else " COLLATE NOCASE"
        if f.op in ("in", "not in"):
            marks = ", ".join("?" * len(f.value))
            if f.op == "in":
                clauses.append(f"{column}{collate} IN ({marks})")
            else:
                clauses.append(f"({column} IS NULL OR {column}{collate} NOT IN ({marks}))")
            params.extend(f.value)
        elif f.op == "!=":
            clauses.append(f"({column} IS NULL OR {column}{collate} != ?)")
            params.append(f.value)
        else:
            clauses.append(f"{column}{collate} {f.op} ?")
            params.append(f.value)
        if f.is_extra and f.op in ("=", "in", "!=", "not in"):
            # A tag head's values (several per item) by the same rule (`tags.tag_sql`).
            values = list(f.value) if f.op in ("in", "not in") else [f.value]
            tagged = tag_sql(f.field, column_sql(f.field), len(values))
            join = " OR " if f.op in ("=", "in") else " AND NOT "
            clauses[-1] = f"({clauses[-1]}{join}{tagged})"
            params.extend(values)
    return (" AND ".join(clauses) or "1"), params


# --- the same filters on in-memory columns ---------------------------------------------

# Columns kept in memory, in the order `FilterColumns.set_rows` takes them after the key.
COLUMN_FIELDS = ("category", "colour", "size", "price", "status")
# What reads them (predicted values where the shop gave none, as `to_sql` does).
COLUMNS_SQL = ", ".join(value_sql(name) for name in COLUMN_FIELDS)
_TEXT_COLUMNS = ("category", "colour", "size", "status")
# SQLite's NOCASE folds ASCII letters only; fold the same way so both paths agree.
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _fold(value: Any) -> str:
    return str(value).translate(_ASCII_LOWER)


class FilterColumns:
    """The filterable metadata as numpy arrays indexed by item key (the FAISS id).

    Text columns hold codes into a per-column vocabulary of case-folded values (0 is
    NULL); price is float64 with NaN for NULL. `mask` gives, for the filters it can
    evaluate (all but `id` and `extra.*`), a boolean array over keys with exactly the
    rows `to_sql` would select.
    """

    def __init__(self) -> None:
        self.present = np.zeros(0, dtype=bool)
        self.codes = {name: np.zeros(0, dtype=np.int32) for name in _TEXT_COLUMNS}
        self.price = np.zeros(0, dtype=np.float64)
        self.vocab: dict[str, dict[str, int]] = {name: {} for name in _TEXT_COLUMNS}

    def __len__(self) -> int:
        return int(np.count_nonzero(self.present))

    @property
    def nbytes(self) -> int:
        return (self.present.nbytes + self.price.nbytes
                + sum(c.nbytes for c in self.codes.values()))

    def _grow(self, size: int) -> None:
        old = len(self.present)
        if size <= old:
            return
        size = max(size, old + old // 4)  # amortised growth for one-at-a-time adds

        def grown(array: np.ndarray, fill) -> np.ndarray:
            out = np.full(size, fill, dtype=array.dtype)
            out[:old] = array
            return out

        self.present = grown(self.present, False)
        self.price = grown(self.price, np.nan)
        self.codes = {name: grown(codes, 0) for name, codes in self.codes.items()}

    def _code(self, name: str, value: Any) -> int:
        if value is None:
            return 0
        vocab = self.vocab[name]
        folded = _fold(value)
        code = vocab.get(folded)
        if code is None:
            code = vocab[folded] = len(vocab) + 1
        return code

    def set_rows(self, rows: Iterable[tuple]) -> None:
        """Store (key, category, colour, size, price, status) rows (new or changed)."""
        rows = list(rows)
        if not rows:
            return
        keys = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        self._grow(int(keys.max()) + 1)
        self.present[keys] = True
        for position, name in enumerate(COLUMN_FIELDS, start=1):
            if name == "price":
                self.price[keys] = np.array([np.nan if r[position] is None else r[position]
                                             for r in rows], dtype=np.float64)
            else:
                self.codes[name][keys] = np.fromiter(
                    (self._code(name, r[position]) for r in rows), dtype=np.int32,
                    count=len(rows))

    def drop(self, keys: Iterable[int]) -> None:
        keys = np.asarray(list(keys), dtype=np.int64)
        keys = keys[keys < len(self.present)]
        self.present[keys] = False

    @staticmethod
    def handles(f: Filter) -> bool:
        return f.field in COLUMN_FIELDS

    def _one(self, f: Filter) -> np.ndarray:
        if f.field == "price":
            values = self.price
            wanted = np.array(f.value if f.op in ("in", "not in") else [f.value], dtype=float)
        else:
            values = self.codes[f.field]
            vocab = self.vocab[f.field]
            items = f.value if f.op in ("in", "not in") else (f.value,)
            # A value no item carries gets code -1, which matches nothing.
            wanted = np.array([vocab.get(_fold(v), -1) for v in items], dtype=np.int64)
        with np.errstate(invalid="ignore"):  # NaN prices compare False, as NULL does
            if f.op == "=":
                return values == wanted[0]
            if f.op == "!=":  # NULL matches too: NaN != x and code 0 != x are True
                return values != wanted[0]
            if f.op == "in":
                return np.isin(values, wanted)
            if f.op == "not in":
                return ~np.isin(values, wanted)
            if f.op == "<":
                return values < wanted[0]
            if f.op == "<=":
                return values <= wanted[0]
            if f.op == ">":
                return values > wanted[0]
            if f.op == ">=":
                return values >= wanted[0]
        raise FilterError(f"filter '{f}': unknown operator '{f.op}'")

    def mask(self, filters: Iterable[Filter]) -> np.ndarray:
        """Keys (as a boolean array) of the items matching every filter it handles."""
        mask = self.present.copy()
        for f in filters:
            if self.handles(f):
                mask &= self._one(f)
        return mask
