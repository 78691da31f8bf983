#!/usr/bin/env python3
"""Give every Patient in fhir_fixtures/ a synthetic name, gender and birth date.

An EHR (and the CDS Hooks sandbox) shows the patient's name in its banner: a fixture patient
without one shows as "Unknown". The names are made up and derived from the patient id, so a run
is repeatable and the same id always gets the same name. Only missing members are added, as text
insertions, so the rest of each file (and its diff) stays as it was; a birth date is only added
where none exists, and always makes an adult (age changes what some cards say).

    python scripts/name-fixture-patients.py           # add what is missing
    python scripts/name-fixture-patients.py --check   # exit 1 naming any patient without them
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fhir_fixtures"
REQUIRED = ("name", "gender", "birthDate")
FAMILY = ("Abernethy", "Balcombe", "Carrow", "Dunmore", "Eastlake", "Fairweather", "Garroway",
          "Holloway", "Ingleby", "Jessop", "Kettering", "Langridge", "Marwood", "Northcott",
          "Oakhurst", "Pendleton", "Quarrie", "Radley", "Stainforth", "Tolland", "Upton",
          "Varley", "Whitcombe", "Yardley")
GIVEN = {
    "female": ("Ada", "Beatrix", "Clara", "Delia", "Elsie", "Fenella", "Greta", "Hazel", "Iris",
               "Juno", "Maren", "Nell", "Orla", "Petra", "Rosalind", "Tamsin"),
    "male": ("Alfred", "Bram", "Cyril", "Desmond", "Edwin", "Felix", "Gideon", "Hugo", "Ivo",
             "Jasper", "Leopold", "Magnus", "Otto", "Rupert", "Silas", "Tobias"),
}
PATIENT_HEAD = re.compile(r'"resourceType":\s*"Patient",(\s*)"id":\s*"([^"]+)"')


def _digest(patient_id: str) -> int:
    return int.from_bytes(hashlib.sha256(patient_id.encode()).digest()[:8], "big")


def synthetic(patient_id: str, gender: str | None) -> dict[str, Any]:
    h = _digest(patient_id)
    gender = gender if gender in GIVEN else ("female", "male")[h % 2]
    return {
        "name": [{"use": "official", "family": FAMILY[(h >> 8) % len(FAMILY)],
                  "given": [GIVEN[gender][(h >> 16) % len(GIVEN[gender])]]}],
        "gender": gender,
        "birthDate": f"{1945 + (h >> 24) % 50}-{1 + (h >> 32) % 12:02d}-{1 + (h >> 40) % 28:02d}",
    }


def patients(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if node.get("resourceType") == "Patient":
            yield node
        for value in node.values():
            yield from patients(value)
    elif isinstance(node, list):
        for value in node:
            yield from patients(value)


def missing(path: Path) -> list[tuple[str, list[str]]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return [(str(p.get("id")), [k for k in REQUIRED if not p.get(k)]) for p in patients(data)
            if any(not p.get(k) for k in REQUIRED)]


def fix(path: Path) -> bool:
    text = path.read_text(encoding="utf-8")
    gaps = dict(missing(path))
    if not gaps:
        return False
    genders = {str(p.get("id")): p.get("gender")
               for p in patients(json.loads(text))}

    def insert(match: re.Match[str]) -> str:
        separator, patient_id = match.group(1), match.group(2)
        wanted = gaps.get(patient_id)
        if not wanted:
            return match.group(0)
        values = synthetic(patient_id, genders.get(patient_id))
        added = "".join(f',{separator}"{key}": {json.dumps(values[key])}' for key in wanted)
        return match.group(0) + added

    fixed = PATIENT_HEAD.sub(insert, text)
    json.loads(fixed)
    path.write_text(fixed, encoding="utf-8")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--check", action="store_true", help="only report, change nothing")
    parser.add_argument("root", nargs="?", type=Path, default=FIXTURES)
    args = parser.parse_args(argv)
    paths = sorted(args.root.rglob("*.json"))
    if not args.check:
        changed = [p for p in paths if fix(p)]
        print(f"named patients in {len(changed)} of {len(paths)} fixtures")
    problems = [(p, gaps) for p in paths for gaps in missing(p)]
    for path, (patient_id, keys) in problems:
        print(f"{path.relative_to(args.root)}: Patient/{patient_id} lacks {', '.join(keys)}",
              file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
