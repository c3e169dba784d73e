"""Chroma's ``where`` and ``where_document`` grammar: validation with Chroma's messages,
and compilation to predicates over stored records.

Semantics measured against Chroma 1.5: ``$ne``/``$nin``/``$not_contains`` also match records
that lack the key; bools never equal ints; ints and floats compare numerically; the
``$not_*`` document operators match records with no document."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import flpc

from schemas.errors import InvalidArgumentError
from schemas.records import Metadata

MetaPredicate = Callable[[Metadata | None], bool]
DocPredicate = Callable[[str | None], bool]

_FIELD_OPS = ("$gt", "$gte", "$lt", "$lte", "$ne", "$eq", "$in", "$nin",
              "$contains", "$not_contains")
_DOC_OPS = ("$contains", "$not_contains", "$regex", "$not_regex", "$and", "$or")


def validate_where(where: Any) -> None:
    if not isinstance(where, dict):
        raise InvalidArgumentError(f"Expected where to be a dict, got {where}")
    if len(where) != 1:
        raise InvalidArgumentError(f"Expected where to have exactly one operator, got {where}")
    for key, value in where.items():
        if not isinstance(key, str):
            raise InvalidArgumentError(f"Expected where key to be a str, got {key}")
        if key in ("$contains", "$not_contains"):
            raise InvalidArgumentError(
                "Expected where key to be a metadata field name or a logical operator "
                f"($and, $or), got {key}")
        if key not in ("$and", "$or", "$in", "$nin") and not isinstance(value, (str, int, float, dict)):
            raise InvalidArgumentError(
                f"Expected where value to be a str, int, float, or operator expression, got {value}")
        if key in ("$and", "$or"):
            if not isinstance(value, list):
                raise InvalidArgumentError(
                    f"Expected where value for $and or $or to be a list of where expressions, got {value}")
            if len(value) <= 1:
                raise InvalidArgumentError(
                    "Expected where value for $and or $or to be a list with at least two where "
                    f"expressions, got {value}")
            for sub in value:
                validate_where(sub)
        elif isinstance(value, dict):
            _validate_operator_expression(value)


def _validate_operator_expression(value: dict[Any, Any]) -> None:
    if len(value) != 1:
        raise InvalidArgumentError(
            f"Expected operator expression to have exactly one operator, got {value}")
    for operator, operand in value.items():
        if operator in ("$gt", "$gte", "$lt", "$lte") and (
                not isinstance(operand, (int, float)) or isinstance(operand, bool)):
            raise InvalidArgumentError(
                f"Expected operand value to be an int or a float for operator {operator}, got {operand}")
        if operator in ("$in", "$nin") and not isinstance(operand, list):
            raise InvalidArgumentError(
                f"Expected operand value to be an list for operator {operator}, got {operand}")
        if operator in ("$contains", "$not_contains") and not isinstance(operand, (str, int, float, bool)):
            raise InvalidArgumentError(
                "Expected operand value to be a str, int, float, or bool for operator "
                f"{operator}, got {operand}")
        if operator not in _FIELD_OPS:
            raise InvalidArgumentError(
                "Expected where operator to be one of $gt, $gte, $lt, $lte, $ne, $eq, $in, $nin, "
                f"$contains, $not_contains, got {operator}")
        if not isinstance(operand, (str, int, float, bool, list)):
            raise InvalidArgumentError(
                "Expected where operand value to be a str, int, float, bool, or list of those "
                f"type, got {operand}")
        if isinstance(operand, list) and (
                not operand or not all(isinstance(x, type(operand[0])) for x in operand)):
            raise InvalidArgumentError(
                "Expected where operand value to be a non-empty list, and all values to be of "
                f"the same type got {operand}")


def validate_where_document(where_document: Any) -> None:
    if not isinstance(where_document, dict):
        raise InvalidArgumentError(
            f"Expected where document to be a dictionary, got {where_document}")
    if len(where_document) != 1:
        raise InvalidArgumentError(
            f"Expected where document to have exactly one operator, got {where_document}")
    for operator, operand in where_document.items():
        if operator not in _DOC_OPS:
            raise InvalidArgumentError(
                "Expected where document operator to be one of $contains, $not_contains, "
                f"$regex, $not_regex, $and, $or, got {operator}")
        if operator in ("$and", "$or"):
            if not isinstance(operand, list):
                raise InvalidArgumentError(
                    "Expected document value for $and or $or to be a list of where document "
                    f"expressions, got {operand}")
            if len(operand) <= 1:
                raise InvalidArgumentError(
                    "Expected document value for $and or $or to be a list with at least two "
                    f"where document expressions, got {operand}")
            for sub in operand:
                validate_where_document(sub)
        elif not isinstance(operand, str):
            raise InvalidArgumentError(
                f"Expected where document operand value for operator {operator} to be a str, got {operand}")
        elif not operand:
            raise InvalidArgumentError(
                f"Expected where document operand value for operator {operator} to be a non-empty str")
        elif operator in ("$regex", "$not_regex"):
            _regex(operand)



class RegexSyntaxError(InvalidArgumentError):
    """Chroma reports a bad pattern from its executor: no `` in <method>.`` suffix."""


def _regex(pattern: str) -> flpc.Pattern:
    """Chroma evaluates ``$regex`` with Rust's ``regex`` crate, so users write its dialect
    (inline flag groups like ``(?i)c(?-i)at``, no look-around); flpc binds that crate."""
    try:
        return flpc.compile(pattern)
    except ValueError as exc:
        raise RegexSyntaxError(f"Regex syntax errror: {exc}") from None


def _same_kind(a: object, b: object) -> bool:
    """Chroma keeps bools apart from numbers and numbers apart from strings."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return True
    return type(a) is type(b)


def _eq(value: object, operand: object) -> bool:
    return not isinstance(value, list) and _same_kind(value, operand) and value == operand


def _field_predicate(key: str, operator: str, operand: Any) -> MetaPredicate:
    missing = object()

    def get(meta: Metadata | None) -> Any:
        return missing if meta is None else meta.get(key, missing)

    if operator == "$eq":
        return lambda m: _eq(get(m), operand)
    if operator == "$ne":
        return lambda m: not _eq(get(m), operand)
    if operator == "$in":
        return lambda m: any(_eq(get(m), o) for o in operand)
    if operator == "$nin":
        return lambda m: not any(_eq(get(m), o) for o in operand)
    if operator in ("$contains", "$not_contains"):
        def contains(m: Metadata | None) -> bool:
            v = get(m)
            return isinstance(v, list) and any(_eq(x, operand) for x in v)
        if operator == "$contains":
            return contains
        return lambda m: not contains(m)
    compare: dict[str, Callable[[Any, Any], bool]] = {
        "$gt": lambda a, b: a > b, "$gte": lambda a, b: a >= b,
        "$lt": lambda a, b: a < b, "$lte": lambda a, b: a <= b,
    }
    cmp = compare[operator]

    def numeric(m: Metadata | None) -> bool:
        v = get(m)
        return (isinstance(v, (int, float)) and not isinstance(v, bool) and cmp(v, operand))
    return numeric


P = TypeVar("P", MetaPredicate, DocPredicate)


def _logical(operator: str, parts: list[P]) -> P:
    """``$and`` / ``$or`` over compiled predicates (of metadata or of documents)."""
    combine = all if operator == "$and" else any
    return cast(P, lambda x: combine(p(x) for p in parts))


def compile_where(where: Metadata) -> MetaPredicate:
    """A predicate over a record's metadata; ``where`` must already be valid."""
    (key, value), = where.items()
    if key in ("$and", "$or"):
        return _logical(key, [compile_where(w) for w in value])
    if isinstance(value, dict):
        (operator, operand), = value.items()
        return _field_predicate(key, operator, operand)
    return _field_predicate(key, "$eq", value)


def compile_where_document(where_document: Metadata) -> DocPredicate:
    (operator, operand), = where_document.items()
    if operator in ("$and", "$or"):
        return _logical(operator, [compile_where_document(w) for w in operand])
    if operator == "$contains":
        return lambda d: d is not None and operand in d
    if operator == "$not_contains":
        return lambda d: d is None or operand not in d
    pattern = _regex(operand)
    if operator == "$regex":
        return lambda d: d is not None and flpc.search(pattern, d) is not None
    return lambda d: d is None or flpc.search(pattern, d) is None
