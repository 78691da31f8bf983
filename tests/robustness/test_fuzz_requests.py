"""Property-based tests: malformed and mutated hook requests and feedback never get a 5xx.

Start from the real scenario fixtures (valid requests that reach every stage of the pipeline)
and mutate them: drop or replace members at any depth, wrong types, huge strings, unicode, deep
nesting, bad prefetch values, bad draftOrders and selections; and raw-body damage (truncation,
invalid UTF-8, other content types). Every answer must be < 500; every 4xx a JSON
OperationOutcome; every 200 a valid CDS Hooks response. The example budget is fixed and the run
derandomized so CI is stable.

fhirServer values stay on loopback: the app's HTTP session refuses any other host, so a mutated
request cannot make the test reach the network.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import requests
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from requests.adapters import HTTPAdapter

from cds_service import create_app
from cds_service.clock import fixed_clock
from cds_service.fixtures import iter_fixtures
from tests.conftest import NOW, assert_valid_cds_response

FIXTURES = list(iter_fixtures(NOW))
SERVICES = {"patient-view": "foot-drop-patient-view", "order-select": "foot-drop-order-select",
            "order-sign": "foot-drop-order-sign"}
FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
CLOSED_PORT_URL = "http://127.0.0.1:9/fhir"  # discard port: nothing listens on loopback


class LoopbackOnly(HTTPAdapter):
    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        host = requests.utils.urlparse(request.url).hostname
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise requests.ConnectionError("test: only loopback FHIR servers")
        return super().send(request, **kwargs)


def loopback_session(_settings: Any) -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.mount("http://", LoopbackOnly(max_retries=0))
    session.mount("https://", LoopbackOnly(max_retries=0))
    return session


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    db = tmp_path_factory.mktemp("fuzz") / "cds.sqlite3"
    app = create_app(
        {"database_url": f"sqlite:///{db}", "fhir_budget_seconds": 0.5, "max_body_mb": 2},
        clock=fixed_clock(NOW), session_factory=loopback_session,
    )
    return app.test_client()


def check_answer(response, *, service_call: bool) -> None:
    status = response.status_code
    text = response.get_data(as_text=True)
    assert status < 500, text[:2000]
    assert status in (200, 400, 404, 405, 412, 413, 415), (status, text[:500])
    assert "Traceback" not in text and 'File "' not in text
    body = orjson.loads(response.get_data())
    if status >= 400:
        assert body["resourceType"] == "OperationOutcome", body
        assert body["issue"] and all(i["severity"] == "error" for i in body["issue"])
    elif service_call:
        assert_valid_cds_response(body)
    else:
        assert set(body) == {"received", "stored"}


# -- JSON values ----------------------------------------------------------------------------------
huge_text = st.sampled_from(["x" * 100_000, "é" * 50_000, "\u202e" * 1000, "\U0001d518" * 20_000])
weird_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", " ", "\x00", "\ud7ff", "null", "Patient/", "Patient/../../x",
                     "{{context.patientId}}", "../../etc/passwd", "%00", "' OR 1=1 --",
                     "<script>alert(1)</script>", "Bearer eyJ.x.y", "Patient/p1?x=y#z",
                     "1985-04-12T23:20:50.52Z", "2026-13-45T99:99:99Z", "Practitioner/dr-1"]),
    huge_text,
)
# orjson (both ends) handles 64-bit integers; bigger ones are sent as raw bytes (damaged_bodies)
numbers = st.one_of(st.integers(-(2**63), 2**64 - 1),
                    st.sampled_from([0, -1, 2**63 - 1, -(2**63), 2**64 - 1, 1e308, 5e-324]),
                    st.floats(allow_nan=False, allow_infinity=False))
scalars = st.one_of(st.none(), st.booleans(), numbers, weird_text)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.text(max_size=12), children, max_size=4)),
    max_leaves=12,
)


@dataclass(frozen=True)
class Deep:
    """A deeply nested JSON value, spliced in as raw bytes by ``encode`` (orjson refuses to
    serialise more than 255 levels, and Hypothesis could not print the value either)."""

    depth: int
    kind: str

    def raw(self) -> bytes:
        if self.kind == "list":
            return b"[" * self.depth + b"1" + b"]" * self.depth
        return b'{"a":' * self.depth + b"1" + b"}" * self.depth

    @property
    def marker(self) -> str:
        return f"__deep_{self.depth}_{self.kind}__"


def encode(body: Any) -> bytes:
    found: dict[str, Deep] = {}

    def default(value: Any) -> str:
        if isinstance(value, Deep):
            found[value.marker] = value
            return value.marker
        raise TypeError(type(value).__name__)

    raw = orjson.dumps(body, default=default)
    for marker, value in found.items():
        raw = raw.replace(f'"{marker}"'.encode(), value.raw())
    return raw


deep = st.builds(Deep, st.sampled_from([50, 200, 900, 1100]), st.sampled_from(["list", "dict"]))

fhir_junk_resources = st.one_of(
    st.fixed_dictionaries({"resourceType": st.sampled_from(
        ["Patient", "Condition", "Observation", "Bundle", "OperationOutcome", "Nope", ""])},
        optional={"id": weird_text, "subject": json_values, "code": json_values,
                  "status": weird_text, "entry": json_values, "birthDate": weird_text,
                  "valueQuantity": json_values, "clinicalStatus": json_values}),
    json_values,
)
bad_prefetch_values = st.one_of(
    json_values,
    fhir_junk_resources,
    st.builds(lambda entries: {"resourceType": "Bundle", "type": "searchset", "entry": entries},
              st.lists(st.one_of(json_values, st.builds(lambda r: {"resource": r},
                                                         fhir_junk_resources)), max_size=5)),
    st.just({"resourceType": "OperationOutcome", "issue": [{"severity": "error"}]}),
    deep,
)
bad_draft_orders = st.one_of(
    json_values,
    st.builds(lambda entries: {"resourceType": "Bundle", "type": "collection", "entry": entries},
              st.lists(st.one_of(json_values, st.builds(lambda r: {"resource": r},
                                                         fhir_junk_resources)), max_size=5)),
)
bad_selections = st.one_of(json_values, st.lists(weird_text, max_size=5))
fhir_servers = st.one_of(weird_text, st.sampled_from([
    CLOSED_PORT_URL, "http://127.0.0.1:9", "http://[::1", "http://127.0.0.1:99999/",
    "https://fhir.example.org/r4", "http://127.0.0.1:9/fhir?x=1#f", "ftp://127.0.0.1/",
    "http://user:pass@127.0.0.1:9/fhir", "http://127.0.0.1:9/%zz"]))


# -- mutations ------------------------------------------------------------------------------------
def paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a member or item, bounded so huge prefetch does not dominate."""
    out = [prefix]
    if len(prefix) >= 6:
        return out
    if isinstance(node, dict):
        for key, value in list(node.items())[:12]:
            out.extend(paths(value, (*prefix, key)))
    elif isinstance(node, list):
        for i, value in enumerate(node[:4]):
            out.extend(paths(value, (*prefix, i)))
    return out


def get_parent(node: Any, path: tuple) -> Any:
    for step in path[:-1]:
        node = node[step]
    return node


@st.composite
def mutated(draw, base: dict, targeted: dict[tuple, st.SearchStrategy]) -> Any:
    """1-3 mutations: replace or delete a random member, or replace a targeted one."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        if not isinstance(doc, dict):
            break
        choice = draw(st.sampled_from(["replace", "delete", "targeted", "targeted"]))
        if choice == "targeted":
            path = draw(st.sampled_from(sorted(targeted, key=repr)))
            parent = doc
            try:
                parent = get_parent(doc, path)
            except (KeyError, IndexError, TypeError):
                continue
            if isinstance(parent, dict):
                parent[path[-1]] = draw(targeted[path])
            continue
        candidates = [p for p in paths(doc) if p]
        if not candidates:
            continue
        path = draw(st.sampled_from(candidates))
        parent = get_parent(doc, path)
        if choice == "delete":
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(st.one_of(json_values, deep))
    if draw(st.integers(0, 19)) == 0:  # now and then, the whole body is something else
        return draw(st.one_of(json_values, deep))
    return doc


def hook_targets(fixture) -> dict[tuple, st.SearchStrategy]:
    targets: dict[tuple, st.SearchStrategy] = {
        ("hook",): st.one_of(weird_text, st.sampled_from(list(SERVICES))),
        ("hookInstance",): st.one_of(weird_text, json_values),
        ("fhirServer",): fhir_servers,
        ("fhirAuthorization",): st.one_of(json_values, st.fixed_dictionaries({
            "access_token": weird_text, "token_type": weird_text, "expires_in": numbers,
            "scope": weird_text, "subject": weird_text})),
        ("context",): json_values,
        ("context", "patientId"): st.one_of(weird_text, json_values),
        ("context", "userId"): st.one_of(weird_text, json_values),
        ("context", "encounterId"): weird_text,
        ("prefetch",): st.one_of(json_values, st.dictionaries(st.text(max_size=20),
                                                              bad_prefetch_values, max_size=3)),
        ("extension",): json_values,
    }
    for key in fixture.request.get("prefetch") or {}:
        targets[("prefetch", key)] = bad_prefetch_values
    if fixture.hook in ("order-select", "order-sign"):
        targets[("context", "draftOrders")] = bad_draft_orders
        targets[("context", "selections")] = bad_selections
        entries = fixture.request["context"]["draftOrders"].get("entry") or []
        for i in range(min(len(entries), 3)):
            targets[("context", "draftOrders", "entry", i)] = st.one_of(
                json_values, st.builds(lambda r: {"resource": r}, fhir_junk_resources))
    return targets


@st.composite
def hook_calls(draw) -> tuple[str, Any]:
    fixture = draw(st.sampled_from(FIXTURES))
    service = SERVICES[fixture.hook]
    if draw(st.integers(0, 9)) == 0:
        service = draw(st.sampled_from([*SERVICES.values(), "no-such-service"]))
    return service, draw(mutated(fixture.request, hook_targets(fixture)))


def test_fixtures_cover_every_hook():
    assert {f.hook for f in FIXTURES} == set(SERVICES), "the fuzz bases need every hook"


@FUZZ
@given(hook_calls())
def test_mutated_hook_requests_never_get_a_5xx(client, call):
    service, body = call
    response = client.post(f"/cds-services/{service}", data=encode(body),
                           content_type="application/json")
    check_answer(response, service_call=True)


# -- raw body damage ------------------------------------------------------------------------------
@st.composite
def damaged_bodies(draw) -> tuple[str, bytes, str | None]:
    fixture = draw(st.sampled_from(FIXTURES))
    raw = orjson.dumps(fixture.request)
    damage = draw(st.sampled_from(["truncate", "flip", "utf8", "prefix", "nan", "bignum",
                                   "dupkeys", "deep", "empty", "ctype"]))
    content_type: str | None = "application/json"
    if damage == "truncate":
        raw = raw[: draw(st.integers(0, len(raw) - 1))]
    elif damage == "flip":
        i = draw(st.integers(0, len(raw) - 1))
        raw = raw[:i] + bytes([draw(st.integers(0, 255))]) + raw[i + 1:]
    elif damage == "utf8":
        i = draw(st.integers(0, len(raw) - 1))
        raw = raw[:i] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00"])) + \
            raw[i:]
    elif damage == "prefix":
        raw = draw(st.sampled_from([b"\xef\xbb\xbf", b"   ", b"[", b"//"])) + raw
    elif damage == "nan":
        raw = raw.replace(b'"hook"', b'"n": NaN, "i": Infinity, "hook"', 1)
    elif damage == "bignum":
        number = draw(st.sampled_from([b"1e400", b"-1e400", b"123456789012345678901234567890",
                                       b"-0", b"1E-400", b"0." + b"1" * 5000]))
        raw = raw.replace(b'"hookInstance":', b'"big": ' + number + b', "hookInstance":', 1)
    elif damage == "dupkeys":
        raw = raw.replace(b'{"hook"', b'{"hook": 1, "hook"', 1)
    elif damage == "deep":
        raw = b"[" * draw(st.integers(900, 5000)) + b"]" * 10
    elif damage == "empty":
        raw = draw(st.sampled_from([b"", b" ", b"null", b"0", b'""', b"[]", b"{}"]))
    else:
        content_type = draw(st.sampled_from([
            None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
            "application/json; charset=latin-1", "application/fhir+json", "application/xml",
            "application/json-patch+json", "*/*", "application/jsonx", "garbage;;;="]))
    return SERVICES[fixture.hook], raw, content_type


@FUZZ
@given(damaged_bodies())
def test_damaged_bodies_never_get_a_5xx(client, damaged):
    service, raw, content_type = damaged
    headers = {} if content_type is None else {"Content-Type": content_type}
    for path in (f"/cds-services/{service}", f"/cds-services/{service}/feedback"):
        response = client.post(path, data=raw, headers=headers)
        check_answer(response, service_call=not path.endswith("/feedback"))


def test_body_above_the_limit_is_413_and_wrong_type_415(client):
    big = b'{"hook": "' + b"x" * (2 * 1024 * 1024 + 10) + b'"}'
    for path in ("/cds-services/foot-drop-patient-view",
                 "/cds-services/foot-drop-patient-view/feedback"):
        response = client.post(path, data=big, content_type="application/json")
        assert response.status_code == 413
        assert response.get_json()["issue"][0]["details"]["coding"][0]["code"] == "body-too-large"
        response = client.post(path, data=b"hook=patient-view", content_type="text/plain")
        assert response.status_code == 415
        assert response.get_json()["resourceType"] == "OperationOutcome"


# -- feedback -------------------------------------------------------------------------------------
timestamps = st.one_of(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                 timezones=st.just(UTC)).map(lambda d: d.isoformat().replace("+00:00", "Z")),
    st.sampled_from([
        "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2026-02-30T00:00:00Z",
        "2026-11-20T23:59:60Z", "2026-11-20t12:00:00z", "2026-11-20T12:00:00",
        "2026-11-20", "2026-11-20T12:00:00+24:00", "2026-11-20T12:00:00.123456789Z",
        "+2026-11-20T12:00:00Z", "2026-W47-5T12:00:00Z", "2026-11-20 12:00:00Z",
        "0000-00-00T00:00:00Z"]),
    weird_text,
)
good_feedback_entries = st.fixed_dictionaries(
    {"card": st.uuids().map(str), "outcome": st.just("overridden"),
     "outcomeTimestamp": timestamps},
    optional={"overrideReason": st.fixed_dictionaries(
        {"reason": st.fixed_dictionaries({"code": st.text(min_size=1, max_size=20)},
                                         optional={"system": st.text(max_size=40),
                                                   "display": st.text(max_size=40)})},
        optional={"userComment": st.text(max_size=200)})},
) | st.fixed_dictionaries(
    {"card": st.uuids().map(str), "outcome": st.just("accepted"),
     "outcomeTimestamp": timestamps,
     "acceptedSuggestions": st.lists(st.fixed_dictionaries({"id": st.uuids().map(str)}),
                                     min_size=1, max_size=3)})


@st.composite
def feedback_bodies(draw) -> tuple[str, Any]:
    entries = draw(st.lists(good_feedback_entries, min_size=1, max_size=4))
    if draw(st.booleans()):
        entries = [*entries, copy.deepcopy(entries[0])]  # a duplicate in the same post
    base = {"feedback": entries}
    targets: dict[tuple, st.SearchStrategy] = {
        ("feedback",): st.one_of(json_values, st.lists(json_values, max_size=3)),
        ("feedback", 0, "card"): st.one_of(weird_text, json_values),
        ("feedback", 0, "outcome"): st.one_of(weird_text, json_values),
        ("feedback", 0, "outcomeTimestamp"): st.one_of(timestamps, json_values),
        ("feedback", 0, "acceptedSuggestions"): st.one_of(json_values,
                                                          st.lists(json_values, max_size=3)),
        ("feedback", 0, "overrideReason"): json_values,
    }
    body = draw(mutated(base, targets)) if draw(st.integers(0, 3)) else base
    service = draw(st.sampled_from([*SERVICES.values(), "no-such-service"]))
    return service, body


@FUZZ
@given(feedback_bodies())
@example(("foot-drop-patient-view", {"feedback": [
    {"card": "c", "outcome": "overridden", "outcomeTimestamp": "0001-01-01T00:00:00+01:00"}]}))
@example(("foot-drop-patient-view", {"feedback": [
    {"card": "c", "outcome": "overridden", "outcomeTimestamp": "2026-11-20T12:00:00Z",
     "overrideReason": {"userComment": "\x00 nul"}}]}))
def test_mutated_feedback_never_gets_a_5xx(client, call):
    service, body = call
    response = client.post(f"/cds-services/{service}/feedback", data=encode(body),
                           content_type="application/json")
    check_answer(response, service_call=False)


def test_feedback_timestamp_out_of_range_is_400_not_500(client):
    """Regression: a timestamp whose UTC value falls before year 1 used to raise OverflowError."""
    body = {"feedback": [{"card": "c", "outcome": "overridden",
                          "outcomeTimestamp": "0001-01-01T00:06:01+01:00"}]}
    response = client.post("/cds-services/foot-drop-patient-view/feedback", json=body)
    assert response.status_code == 400
    assert "outcomeTimestamp" in response.get_json()["issue"][0]["diagnostics"]

