"""The command line: evaluate, fire (offline parts), load-fixtures (plan), feedback-report."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cds_service import cli
from cds_service.__main__ import main
from cds_service.config import PROJECT_ROOT
from cds_service.fixtures import fixture_paths, load_fixture
from cds_service.storage.db import Database, FeedbackEntry, IssuedCard
from tests.conftest import NOW

FIXTURES = fixture_paths()
NOW_ARG = NOW.isoformat()
# One fixture per hook is enough to show evaluate == the service; the pathway itself is tested
# over every fixture elsewhere (and over a real FHIR server in tests/integration).
ONE_PER_HOOK = list({json.loads(p.read_text()).get("hook"): p for p in reversed(FIXTURES)}.values())


def fixture_id(path: Path) -> str:
    return cli.fixture_label(path)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str) -> None:
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err


def test_commands_register_under_python_dash_m():
    """`python -m cds_service` runs __main__ as a second module object; the registry lives in
    cds_service.commands so the cli commands are found either way."""
    result = subprocess.run([sys.executable, "-m", "cds_service", "--help"], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    for name in ("serve", "evaluate", "fire", "load-fixtures", "feedback-report", "fixture"):
        assert name in result.stdout


# -- evaluate -----------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ONE_PER_HOOK, ids=fixture_id)
def test_evaluate_json_matches_the_service(path, capsys, call_service):
    """evaluate (offline pipeline) answers exactly what the HTTP service answers."""
    code, out, _err = run(capsys, "evaluate", str(path), "--json", "--now", NOW_ARG)
    assert code == 0
    offline = json.loads(out)["cards"]
    fixture = load_fixture(path, NOW)
    online = call_service(fixture.service_id, fixture.request).get_json()["cards"]
    strip = [{k: v for k, v in c.items() if k not in ("uuid", "suggestions")} for c in online]
    assert [{k: v for k, v in c.items() if k not in ("uuid", "suggestions")}
            for c in offline] == strip


def test_evaluate_prints_cards_readably(capsys):
    path = FIXTURES[0]
    code, out, err = run(capsys, "evaluate", str(path), "--now", NOW_ARG)
    assert code == 0
    assert "card(s)" in out.splitlines()[0]
    _, out_json, _ = run(capsys, "evaluate", str(path), "--now", NOW_ARG, "--json")
    cards = json.loads(out_json)["cards"]
    for n, card in enumerate(cards, 1):
        assert f"{n}. [{card['indicator'].upper()}] {card['summary']}" in out
        assert f"id:    {card['source']['topic']['code']}" in out
        for suggestion in card.get("suggestions", []):
            assert suggestion["label"] in out
    if cards:
        assert "why:" in out and "source:" in out
    assert "expected" in err  # a fixture is compared with its expectation


def test_evaluate_a_plain_request_with_relative_dates(tmp_path, capsys):
    request = {
        "hook": "patient-view", "hookInstance": "0d2c6a53-1111-4c3b-9a51-2b7b0f0a0001",
        "context": {"userId": "Practitioner/x", "patientId": "p1"},
        "prefetch": {
            "patient": {"resourceType": "Patient", "id": "p1", "birthDate": "$now-20000d:date"},
            **{key: {"resourceType": "Bundle", "type": "searchset", "entry": []}
               for key in ("conditions", "observations", "serviceRequests", "deviceRequests",
                           "procedures", "diagnosticReports", "imagingStudies",
                           "medicationRequests")},
        },
    }
    path = tmp_path / "request.json"
    path.write_text(json.dumps(request))
    code, out, _ = run(capsys, "evaluate", str(path), "--now", NOW_ARG)
    assert code == 0
    assert "No cards." in out


def test_evaluate_check_fails_when_the_fixture_differs(tmp_path, capsys):
    data = {"description": "x", "hook": "patient-view",
            "expected": [{"id": "no-such-recommendation", "indicator": "info"}],
            "request": {"hook": "patient-view", "hookInstance": "i-1",
                        "context": {"userId": "Practitioner/x", "patientId": "p1"},
                        "prefetch": {"patient": {"resourceType": "Patient", "id": "p1"},
                                     **{k: None for k in ("conditions", "observations",
                                                          "serviceRequests", "deviceRequests",
                                                          "procedures", "diagnosticReports",
                                                          "imagingStudies",
                                                          "medicationRequests")}}}}
    path = tmp_path / "fixture.json"
    path.write_text(json.dumps(data))
    code, _out, err = run(capsys, "evaluate", str(path), "--check", "--now", NOW_ARG)
    assert code == 1
    assert "DIFFERS: missing no-such-recommendation" in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("{not json", "not valid JSON"),
        ('{"resourceType": "Patient"}', "neither a hook request nor a fixture"),
        ('{"hook": "patient-view", "hookInstance": "x", "context": {}}', "not valid"),
        ('{"hook": "patient-view", "hookInstance": "x", "context": {"patientId": "p", '
         '"userId": "Practitioner/u"}}', "prefetch incomplete"),
        ('{"hook": "no-such-hook", "hookInstance": "x", "context": {}}', "no service answers"),
    ],
)
def test_evaluate_errors_are_one_line(tmp_path, capsys, content, message):
    path = tmp_path / "input.json"
    if content is not None:
        path.write_text(content)
    code, out, err = run(capsys, "evaluate", str(path))
    assert_one_line_error(code, err)
    assert message in err
    assert out == ""


def test_bad_now_is_one_line(capsys):
    code, _out, err = run(capsys, "evaluate", "x.json", "--now", "yesterday")
    assert_one_line_error(code, err)


# -- fire (the parts that need no FHIR server; the rest is in tests/integration) ----------------
def test_fire_unreachable_server_is_one_line(capsys):
    code, _out, err = run(capsys, "fire", "--fhir-server", "http://127.0.0.1:9/fhir",
                          "--patient", "p1", "--timeout", "5")
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(lines) == 1
    assert "prefetch patient" in lines[0] and "unreachable" in lines[0]


def test_fire_order_select_needs_orders(capsys):
    code, _out, err = run(capsys, "fire", "--fhir-server", "http://127.0.0.1:9/fhir",
                          "--patient", "p1", "--hook", "order-select")
    assert_one_line_error(code, err)
    assert "--orders" in err


def test_read_orders_from_a_bundle_selects_all(tmp_path):
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "ServiceRequest", "id": "o1", "authoredOn": "$now:date"}},
        {"resource": {"resourceType": "MedicationRequest", "id": "o2"}},
    ]}
    path = tmp_path / "orders.json"
    path.write_text(json.dumps(bundle))
    orders, selections = cli.read_orders(str(path), NOW)
    assert selections == ["ServiceRequest/o1", "MedicationRequest/o2"]
    assert orders["entry"][0]["resource"]["authoredOn"] == NOW.date().isoformat()


def test_read_orders_rejects_orders_without_id(tmp_path):
    path = tmp_path / "orders.json"
    path.write_text(json.dumps({"resourceType": "ServiceRequest", "status": "draft"}))
    with pytest.raises(cli.CliError, match="needs an id"):
        cli.read_orders(str(path), NOW)


def test_build_request_shapes():
    body = cli.build_request("order-select", "p1", fhir_server="https://fhir.example/r4",
                             token="t0k", prefetch={"patient": None},
                             draft_orders={"resourceType": "Bundle"},
                             selections=["ServiceRequest/o1"])
    assert body["context"]["selections"] == ["ServiceRequest/o1"]
    assert body["fhirAuthorization"]["access_token"] == "t0k"
    assert body["fhirAuthorization"]["token_type"] == "Bearer"
    assert body["prefetch"] == {"patient": None}
    assert len(body["hookInstance"]) == 36
    assert "prefetch" not in cli.build_request("patient-view", "p1")


# -- load-fixtures ------------------------------------------------------------------------------
def _fixture(tmp_path: Path, name: str, patient: str, prefetch: dict, **extra) -> Path:
    data = {"description": name, "hook": "patient-view", "expected": [], **extra,
            "request": {"hook": "patient-view", "hookInstance": f"{name}-1",
                        "context": {"userId": "Practitioner/dr-1", "patientId": patient},
                        "prefetch": prefetch}}
    path = tmp_path / "patient-view" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def _bundle(*resources: dict) -> dict:
    return {"resourceType": "Bundle", "type": "searchset",
            "entry": [{"resource": r} for r in resources]}


def test_plan_puts_every_prefetch_resource_with_stable_ids(tmp_path):
    path = _fixture(tmp_path, "negative", "p1", {
        "patient": {"resourceType": "Patient", "id": "p1", "meta": {"versionId": "3"}},
        "conditions": _bundle(
            {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},
             "recordedDate": "$now-3d:date"},
            {"resourceType": "Condition", "subject": {"reference": "Patient/other-9"}},
            {"resourceType": "OperationOutcome", "issue": []},
        ),
        "observations": {"resourceType": "OperationOutcome", "issue": []},
        "procedures": None,
        "serviceRequests": _bundle({"resourceType": "ServiceRequest", "id": "s1",
                                    "subject": {"reference": "Patient/p1"},
                                    "requester": {"reference": "Practitioner/dr-2"},
                                    "encounter": {"reference": "Encounter/e1"},
                                    "basedOn": [{"reference": "CarePlan/cp1"}]}),
    })
    plan = cli.plan_upload([path], NOW, root=tmp_path)
    again = cli.plan_upload([path], NOW, root=tmp_path)
    assert plan.bundles() == again.bundles()  # deterministic: loading twice is idempotent
    [upload] = plan.uploads
    assert upload.name == "patient-view/negative"
    entries = upload.bundle["entry"]
    assert upload.bundle["type"] == "transaction"
    assert all(e["request"]["method"] == "PUT" for e in entries)
    urls = [e["request"]["url"] for e in entries]
    assert urls[:2] == ["Patient/p1", "Condition/c1"]
    assert urls[2] == "Condition/negative-conditions-1"  # no id in the fixture: a stable one
    assert "OperationOutcome" not in json.dumps(upload.bundle)
    assert "versionId" not in json.dumps(upload.bundle)
    condition = entries[1]["resource"]
    assert condition["recordedDate"] == (NOW - timedelta(days=3)).date().isoformat()
    stubs = {e["request"]["url"]: e["resource"] for e in plan.stubs["entry"]}
    # the other patient's resource is loaded under its own patient; references get stubs
    assert set(stubs) == {"Patient/other-9", "Practitioner/dr-1", "Practitioner/dr-2",
                          "Encounter/e1"}
    assert stubs["Encounter/e1"]["status"] == "unknown"
    assert any("CarePlan/cp1" in w for w in plan.dangling)


def test_plan_skips_opted_out_fixtures_and_warns_on_conflicts(tmp_path):
    patient = {"resourceType": "Patient", "id": "p1", "gender": "female"}
    a = _fixture(tmp_path, "a", "p1", {"patient": patient})
    b = _fixture(tmp_path, "b", "p1", {"patient": {**patient, "gender": "male"}})
    c = _fixture(tmp_path, "c", "p3", {"patient": {"resourceType": "Patient", "id": "p3"}},
                 roundTrip=False)
    plan = cli.plan_upload([a, b, c], NOW, root=tmp_path)
    assert [u.name for u in plan.uploads] == ["patient-view/a", "patient-view/b"]
    assert plan.skipped == [("patient-view/c", "roundTrip: false")]
    assert any("share Patient/p1" in w for w in plan.conflicts)
    assert any("Patient/p1 differs" in w for w in plan.conflicts)
    assert len(cli.plan_upload([c], NOW, include_all=True, root=tmp_path).uploads) == 1


def test_plan_of_the_real_fixtures(capsys):
    """Every round-trip fixture becomes one Bundle; no draft orders are uploaded."""
    code, out, _err = run(capsys, "load-fixtures", "--fhir-server", "http://unused",
                          "--dry-run", "--now", NOW_ARG)
    assert code == 0
    bundles = {b["name"]: b["bundle"] for b in json.loads(out)}
    for path in FIXTURES:
        data = json.loads(path.read_text())
        name = cli.fixture_label(path)
        if not cli.round_trips(data):
            assert name not in bundles
            continue
        urls = {e["request"]["url"] for e in bundles[name]["entry"]}
        patient = data["request"]["context"]["patientId"]
        assert f"Patient/{patient}" in urls or f"Patient/{patient}" in {
            e["request"]["url"] for e in bundles.get("(referenced resources)", {"entry": []})[
                "entry"]}
        for entry in (data["request"]["context"].get("draftOrders") or {}).get("entry", []):
            resource = entry.get("resource") or {}
            assert f"{resource.get('resourceType')}/{resource.get('id')}" not in urls


def test_load_fixtures_unreachable_server_is_one_line(tmp_path, capsys):
    path = _fixture(tmp_path, "a", "p1", {"patient": {"resourceType": "Patient", "id": "p1"}})
    code, _out, err = run(capsys, "load-fixtures", "--fhir-server", "http://127.0.0.1:9/fhir",
                          str(path), "--timeout", "5")
    assert code == 1
    assert "[1/2]" in err  # progress
    assert err.strip().splitlines()[-1].startswith("error: 2 of 2 bundles could not be loaded")


# -- feedback-report ----------------------------------------------------------------------------
def test_feedback_report(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'feedback.sqlite3'}"
    database = Database(url)
    database.migrate()
    when = datetime(2026, 11, 1, tzinfo=UTC)
    database.record_issued(
        [IssuedCard(f"a-{i}", "svc", "rec-a", "info", when) for i in range(4)]
        + [IssuedCard("b-0", "svc", "rec-b", "critical", when)]
    )

    def entry(card: str, outcome: str, reason: str | None = None) -> FeedbackEntry:
        return FeedbackEntry("svc", card, outcome, (), "sys" if reason else None, reason, None,
                             when)

    database.store_feedback([entry("a-0", "accepted"), entry("a-1", "overridden", "declined"),
                             entry("a-2", "overridden", "declined"), entry("zz", "accepted")],
                            when)
    database.dispose()
    code, out, _err = run(capsys, "feedback-report", "--database-url", url, "--json")
    assert code == 0
    rows = {r["recommendation"]: r for r in json.loads(out)["recommendations"]}
    assert rows["rec-a"]["issued"] == 4
    assert rows["rec-a"]["acceptance_rate"] == 0.25
    assert rows["rec-a"]["override_rate"] == 0.5
    assert rows["rec-a"]["no_feedback"] == 1
    assert rows["rec-a"]["override_reasons"] == {"declined": 2}
    assert rows["rec-b"]["acceptance_rate"] == 0.0
    assert rows["(unknown card)"]["acceptance_rate"] is None
    code, out, _err = run(capsys, "feedback-report", "--database-url", url)
    assert code == 0
    line = next(line for line in out.splitlines() if line.startswith("rec-a"))
    assert "25%" in line and "50%" in line and "declined 2" in line
    code, out, _err = run(capsys, "feedback-report", "--database-url", url, "--json",
                          "--min-issued", "2")
    assert {r["recommendation"] for r in json.loads(out)["recommendations"]} == {
        "rec-a", "(unknown card)"}


def test_feedback_report_without_database_is_one_line(tmp_path, capsys):
    code, _out, err = run(capsys, "feedback-report", "--database-url",
                          f"sqlite:///{tmp_path / 'missing.sqlite3'}")
    assert_one_line_error(code, err)
    assert not (tmp_path / "missing.sqlite3").exists()


# -- fixture ------------------------------------------------------------------------------------
def test_fixture_prints_a_request_the_service_answers_as_expected(capsys, call_service):
    path = next(p for p in FIXTURES if "progressive" in p.stem)
    code, out, _err = run(capsys, "fixture", path.stem, "--now", NOW_ARG)
    assert code == 0
    request = json.loads(out)
    assert "$now" not in out  # every relative date was materialised
    fixture = load_fixture(path, NOW)
    assert request == fixture.request
    cards = call_service(fixture.service_id, request).get_json()["cards"]
    assert {c["source"]["topic"]["code"] for c in cards} == fixture.expected_ids


def test_fixture_unknown_name_is_one_line_error(capsys):
    code, _out, err = run(capsys, "fixture", "no-such-scenario")
    assert_one_line_error(code, err)


def test_why_line_keeps_the_list_a_colon_introduces():
    detail = ("**Why this card:** red flags in the last 30 days:\n\n"
              "- *Progressive weakness:* left 4/5, then 2/5\n- *Cauda equina signs:* retention\n\n"
              "**What the sources say:** ...")
    why = cli.why_line(detail)
    assert "left 4/5, then 2/5" in why and "retention" in why
    assert "sources say" not in why
