"""Metadata filters for catalog searches, parsed from short strings.

    category=Dress          equality (text is compared case-insensitively)
    colour!=black           inequality (items without a colour match too)
    colour in (red, blue)   a set; `not in (...)` excludes one
    price<30  price>=10     numeric ranges
    status=available        available, reserved or sold
    extra.brand=Zara        a column kept in the item's `extra` data

Several filters all have to hold. They become one SQL WHERE clause with bound
parameters, so the candidate items are chosen before any vector is compared.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import FashionLensError

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


def parse_filters(filters: None | str | Filter | Mapping | Iterable) -> list[Filter]:
    """Filters from a string, a list of strings/Filters, or a mapping.

    In a mapping a scalar means equality and a list means `in`; a key may end in an
    operator for ranges: `{"category": "Dress", "colour": ["red", "blue"], "price<": 30}`.
    """
    if filters is None:
        return []
    if isinstance(filters, Filter):
        return [filters]
    if isinstance(filters, str):
        return [parse_filter(filters)]
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
    return [f if isinstance(f, Filter) else parse_filter(f) for f in filters]


def column_sql(field: str) -> str:
    """The SQL expression reading a canonical field."""
    if field.startswith("extra."):
        return f"json_extract(extra, '$.\"{field[len('extra.'):]}\"')"
    return "key" if field == "key" else field


def to_sql(filters: list[Filter]) -> tuple[str, list]:
    """A WHERE clause (without the keyword; `1` when empty) and its parameters."""
    clauses, params = [], []
    for f in filters:
        column = column_sql(f.field)
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
    return (" AND ".join(clauses) or "1"), params
