"""Every fixture patient has a synthetic name, gender and birth date, so an EHR banner (the CDS
Hooks sandbox's included) shows a name instead of "Unknown"."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cds_service.fixtures import FIXTURES_DIR

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "name-fixture-patients.py"


def test_every_fixture_patient_has_name_gender_and_birth_date() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "--check", str(FIXTURES_DIR)],
                            capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, (
        f"{result.stderr}\nrun: python scripts/name-fixture-patients.py")


def test_the_script_names_a_new_patient_the_same_way_each_time(tmp_path: Path) -> None:
    fixture = tmp_path / "new.json"
    fixture.write_text('{"request": {"prefetch": {"patient": {\n  "resourceType": "Patient",\n'
                       '  "id": "p-1"\n}}}}', encoding="utf-8")
    for _ in range(2):
        subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], check=True,
                       capture_output=True, timeout=60)
    text = fixture.read_text(encoding="utf-8")
    assert text.count('"name"') == 1 and '"gender"' in text and '"birthDate"' in text
    check = subprocess.run([sys.executable, str(SCRIPT), "--check", str(tmp_path)],
                           capture_output=True, check=False, timeout=60)
    assert check.returncode == 0
