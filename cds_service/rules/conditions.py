"""Condition trees from ``cards/recommendations/*.yaml``, compiled once at load.

A tree is ``{all: [...]}``, ``{any: [...]}``, ``{not: {...}}`` or a leaf
``{fact: <name>, op: <operator>, value: <literal>}``. A leaf without ``op`` tests that the fact is
true. Fact names starting with ``order.`` read the selected draft order (order-select only).
Unknown facts or operators fail at load, never silently evaluate to false.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol


class ConditionError(ValueError):
    pass


class FactSource(Protocol):
    def value(self, name: str) -> Any: ...


Predicate = Callable[[FactSource], bool]


def _compare(fn: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def check(actual: Any, expected: Any) -> bool:
        # A missing value never satisfies a comparison: no card fires on absent data.
        return actual is not None and fn(actual, expected)

    return check


OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "is_true": lambda actual, _: actual is True,
    "is_false": lambda actual, _: actual is False,
    "eq": _compare(operator.eq),
    "ne": _compare(operator.ne),
    "lt": _compare(operator.lt),
    "le": _compare(operator.le),
    "gt": _compare(operator.gt),
    "ge": _compare(operator.ge),
    "in": _compare(lambda actual, expected: actual in expected),
    "not_in": _compare(lambda actual, expected: actual not in expected),
    "contains": _compare(lambda actual, expected: expected in actual),
    "is_null": lambda actual, _: actual is None,
    "not_null": lambda actual, _: actual is not None,
}
NEEDS_VALUE = frozenset({"eq", "ne", "lt", "le", "gt", "ge", "in", "not_in", "contains"})


@dataclass(frozen=True)
class CompiledCondition:
    predicate: Predicate
    facts: frozenset[str]

    def __call__(self, source: FactSource) -> bool:
        return self.predicate(source)


def compile_condition(
    tree: Mapping[str, Any], known_facts: Collection[str], where: str
) -> CompiledCondition:
    used: set[str] = set()
    predicate = _compile(tree, known_facts, where, used)
    return CompiledCondition(predicate, frozenset(used))


def _compile(node: Any, known: Collection[str], where: str, used: set[str]) -> Predicate:
    if not isinstance(node, Mapping):
        raise ConditionError(f"{where}: a condition must be a mapping, got {node!r}")
    keys = set(node) - {"description"}
    if keys == {"all"} or keys == {"any"}:
        kind = "all" if "all" in node else "any"
        children = node[kind]
        if not isinstance(children, list) or not children:
            raise ConditionError(f"{where}: '{kind}' needs a non-empty list")
        compiled = [_compile(c, known, where, used) for c in children]
        if kind == "all":
            return lambda src: all(p(src) for p in compiled)
        return lambda src: any(p(src) for p in compiled)
    if keys == {"not"}:
        inner = _compile(node["not"], known, where, used)
        return lambda src: not inner(src)
    if "fact" in keys and keys <= {"fact", "op", "value"}:
        name = node["fact"]
        if name not in known:
            raise ConditionError(f"{where}: unknown fact {name!r}")
        op_name = node.get("op", "is_true")
        if op_name not in OPERATORS:
            raise ConditionError(f"{where}: unknown operator {op_name!r}")
        if op_name in NEEDS_VALUE and "value" not in node:
            raise ConditionError(f"{where}: operator {op_name!r} needs a value")
        fn = OPERATORS[op_name]
        expected = node.get("value")
        if op_name in {"in", "not_in"}:
            expected = frozenset(expected)
        used.add(name)
        return lambda src: fn(src.value(name), expected)
    raise ConditionError(f"{where}: cannot read condition {dict(node)!r}")
