"""Check every response against CDS Hooks 2.0 before it leaves: a bug becomes a logged 500
with an OperationOutcome, never a malformed card in a clinician's EHR."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cds_service.validation.request import validator


class ResponseInvalid(RuntimeError):
    pass


def find_empty_members(node: Any, path: str = "") -> list[str]:
    """CDS Hooks forbids null, "", [] and {} members (``cards: []`` is the one exception)."""
    found: list[str] = []
    if isinstance(node, Mapping):
        for key, value in node.items():
            here = f"{path}.{key}" if path else str(key)
            if value is None or value == "" or value == [] or value == {}:
                if here != "cards":
                    found.append(here)
            else:
                found.extend(find_empty_members(value, here))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found.extend(find_empty_members(value, f"{path}[{i}]"))
    return found


def check_response(body: Mapping[str, Any]) -> None:
    errors = sorted(validator("cds-response.schema.json").iter_errors(body), key=str)
    if errors:
        first = errors[0]
        where = ".".join(str(p) for p in first.absolute_path)
        raise ResponseInvalid(f"response invalid at {where or 'top'}: {first.validator}")
    empty = find_empty_members(body)
    if empty:
        raise ResponseInvalid(f"response has empty members: {empty[:3]}")
