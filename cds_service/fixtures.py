"""Scenario fixtures under ``fhir_fixtures/``: one JSON file per scenario.

Dates inside a fixture are written relative to "now" so fixtures never go stale:
``"$now"``, ``"$now-40d"``, ``"$now-3h"``, ``"$now+1d"`` become an ISO date-time, and the same
with a ``:date`` suffix (``"$now-40d:date"``) becomes a date. Tests pin ``now`` with an injected
clock; ``load-fixtures`` and ``evaluate`` use the real clock.

File shape::

    {"description": "...", "hook": "patient-view",
     "expected": [{"id": "<recommendation id>", "indicator": "critical",
                   "detailIncludes": ["text the detail must name"]}],
     "request": { a CDS Hooks request with context and prefetch }}
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cds_service.config import PROJECT_ROOT

FIXTURES_DIR = PROJECT_ROOT / "fhir_fixtures"
_RELATIVE = re.compile(r"^\$now(?:([+-])(\d+)([dhm]))?(:date)?$")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def materialize(node: Any, now: datetime) -> Any:
    if isinstance(node, dict):
        return {k: materialize(v, now) for k, v in node.items()}
    if isinstance(node, list):
        return [materialize(v, now) for v in node]
    if isinstance(node, str) and node.startswith("$now"):
        match = _RELATIVE.match(node)
        if not match:
            raise ValueError(f"bad relative date {node!r}")
        sign, amount, unit, as_date = match.groups()
        moment = now
        if amount:
            delta = timedelta(**{_UNITS[unit]: int(amount)})
            moment = now + delta if sign == "+" else now - delta
        if as_date:
            return moment.date().isoformat()
        return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
    return node


@dataclass(frozen=True)
class Fixture:
    name: str
    path: Path
    hook: str
    description: str
    expected: list[dict[str, Any]]
    request: dict[str, Any]

    @property
    def service_id(self) -> str:
        return f"foot-drop-{self.hook}"

    @property
    def expected_ids(self) -> set[str]:
        return {e["id"] for e in self.expected}


def load_fixture(path: Path, now: datetime) -> Fixture:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return Fixture(
        name=Path(path).stem,
        path=Path(path),
        hook=data["hook"],
        description=data.get("description", ""),
        expected=data.get("expected", []),
        request=materialize(data["request"], now),
    )


def fixture_paths(root: Path = FIXTURES_DIR) -> list[Path]:
    return sorted(p for p in root.rglob("*.json") if p.is_file())


def iter_fixtures(now: datetime, root: Path = FIXTURES_DIR) -> Iterator[Fixture]:
    for path in fixture_paths(root):
        yield load_fixture(path, now)
