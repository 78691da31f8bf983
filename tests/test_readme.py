"""The README is the newcomer's contract: its commands and its configuration table stay true."""

from __future__ import annotations

import re

from cds_service.config import PROJECT_ROOT, env_table

README = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_documented_in_the_configuration_table():
    documented = set(re.findall(r"^\| `(CDS_[A-Z_]+)` \|", README, flags=re.MULTILINE))
    in_code = {name for name, _default, _field in env_table()}
    assert documented == in_code


def test_readme_gives_the_two_commands_and_ci_runs_the_test_one():
    assert "make serve" in README and "make test" in README
    ci = (PROJECT_ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^make test$", ci, flags=re.MULTILINE)
    makefile = (PROJECT_ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^serve:", makefile, flags=re.MULTILINE)
    assert re.search(r"^test:", makefile, flags=re.MULTILINE)


def test_readme_examples_name_files_that_exist():
    for path in re.findall(r"(fhir_fixtures/[\w/.-]+\.json)", README):
        assert (PROJECT_ROOT / path).is_file(), path
