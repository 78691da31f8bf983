"""load-bundles and fire --all-patients, against HTTP doubles (the real FHIR server and the
Synthea sample are in tests/integration/test_synthea_population.py)."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Any

import pytest
import responses

from cds_service import population
from cds_service.__main__ import main
from tests.conftest import NOW

BASE = "http://127.0.0.1:9/fhir"


def _bundle(patient_id: str, *extra: dict[str, Any]) -> dict[str, Any]:
    resources = [{"resourceType": "Patient", "id": patient_id, "gender": "female",
                  "birthDate": "1960-01-01"}, *extra]
    return {"resourceType": "Bundle", "type": "collection",
            "entry": [{"resource": r} for r in resources]}


def _folder(tmp_path: Path) -> Path:
    (tmp_path / "a.json").write_text(json.dumps(_bundle("p-a")))
    condition = {"resourceType": "Condition", "id": "c-b", "subject": {"reference": "Patient/p-b"},
                 "code": {"text": "Hypertension"}}
    (tmp_path / "b.json.gz").write_bytes(gzip.compress(json.dumps(_bundle("p-b", condition))
                                                       .encode()))
    (tmp_path / "notes.txt").write_text("not a bundle")
    return tmp_path


def _transaction_ok(request: Any) -> tuple[int, dict[str, str], str]:
    entries = json.loads(request.body)["entry"]
    body = {"resourceType": "Bundle", "type": "transaction-response",
            "entry": [{"response": {"status": "200 OK"}} for _ in entries]}
    return 200, {}, json.dumps(body)


@responses.activate
def test_load_bundles_puts_every_resource_of_json_and_gzip_files(tmp_path, capsys):
    responses.add(responses.GET, f"{BASE}/metadata", json={"resourceType": "CapabilityStatement"})
    responses.add_callback(responses.POST, f"{BASE}/", callback=_transaction_ok)
    code = main(["load-bundles", str(_folder(tmp_path)), "--fhir-server", BASE])
    err = capsys.readouterr().err
    assert code == 0, err
    posted = [json.loads(c.request.body) for c in responses.calls if c.request.method == "POST"]
    urls = [e["request"]["url"] for bundle in posted for e in bundle["entry"]]
    assert sorted(urls) == ["Condition/c-b", "Patient/p-a", "Patient/p-b"]
    assert all(e["request"]["method"] == "PUT" for b in posted for e in b["entry"])
    assert "done: 3 resource(s) from 2 file(s)" in err


def test_load_bundles_rejects_entries_without_id(tmp_path, capsys):
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"resource": {"resourceType": "Patient"}}]}
    (tmp_path / "x.json").write_text(json.dumps(bundle))
    code = main(["load-bundles", str(tmp_path), "--fhir-server", BASE])
    err = capsys.readouterr().err
    assert code == 1 and "needs a resource with resourceType and id" in err


def test_load_bundles_empty_folder_is_one_line(tmp_path, capsys):
    code = main(["load-bundles", str(tmp_path), "--fhir-server", BASE])
    err = capsys.readouterr().err
    assert code == 1 and err.count("error:") == 1 and "no .json" in err


def test_fire_needs_a_patient_or_all_patients(capsys):
    code = main(["fire", "--fhir-server", BASE])
    err = capsys.readouterr().err
    assert code == 1 and "--all-patients" in err


def _searchset(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset",
            "entry": [{"resource": r} for r in resources]}


@responses.activate
def test_fire_all_patients_pages_through_patients_and_summarises(capsys):
    page2 = f"{BASE}/Patient?_count=200&_elements=id&_offset=200"
    responses.add(responses.GET, re.compile(re.escape(f"{BASE}/Patient?_count=200&_elements=id")
                                            + "$"),
                  json={**_searchset([{"resourceType": "Patient", "id": "p-a"}]),
                        "link": [{"relation": "next", "url": page2}]})
    responses.add(responses.GET, page2,
                  json=_searchset([{"resourceType": "Patient", "id": "p-b"}]))
    foot_drop = {"resourceType": "Condition", "id": "c-fd", "subject": {"reference": "Patient/p-b"},
                 "clinicalStatus": {"coding": [{
                     "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                     "code": "active"}]},
                 "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm",
                                      "code": "M21.372", "display": "Foot drop, left foot"}]},
                 "onsetDateTime": "2026-10-01"}
    for pid in ("p-a", "p-b"):
        responses.add(responses.GET, f"{BASE}/Patient/{pid}",
                      json={"resourceType": "Patient", "id": pid, "gender": "male",
                            "birthDate": "1970-01-01"})
    responses.add(responses.GET, re.compile(rf"{re.escape(BASE)}/Condition\?patient=p-b.*"),
                  json=_searchset([foot_drop]))
    responses.add(responses.GET, re.compile(rf"{re.escape(BASE)}/\w+\?patient=.*"),
                  json=_searchset([]))
    code = main(["fire", "--all-patients", "--fhir-server", BASE, "--now", NOW.isoformat()])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "2 patient(s)" in out
    assert re.search(r"200\s+2", out)
    assert re.search(r"orthosis-and-rehabilitation\s+info\s+1", out)
    assert "slowest patients:" in out and "p-a" in out and "p-b" in out


def test_summary_counts_statuses_and_errors():
    runs = [population.PatientRun("p1", 200, 0.5, [("localize-lesion", "info")]),
            population.PatientRun("p2", "error", 2.0, error="timeout")]
    text = population.summary(runs)
    assert re.search(r"200\s+1", text) and re.search(r"error\s+1", text)
    assert "error p2: timeout" in text
    assert text.index("p2") < text.index("p1", text.index("slowest"))  # slowest first


@pytest.mark.parametrize("name", ["a.json", "b.json.gz"])
def test_read_resources_reads_plain_and_gzip(tmp_path, name):
    assert population.read_resources(_folder(tmp_path) / name)[0]["resourceType"] == "Patient"
