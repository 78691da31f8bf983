"""Command-line tools, registered on ``python -m cds_service`` with the ``@command`` decorator.

evaluate          run a hook request (or a fixture) through the pathway offline; print the cards
fire              act like an EHR: prefetch from a FHIR server, call the service, print the cards
load-fixtures     upload fhir_fixtures/ patients to a FHIR server as transaction Bundles
feedback-report   acceptance and override rates per recommendation, from the feedback database

Progress goes to stderr; errors are one ``error: ...`` line on stderr with a non-zero exit code.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import re
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from cds_service.clock import Clock, fixed_clock, system_clock
from cds_service.commands import Handler, command
from cds_service.config import Settings, SettingsError
from cds_service.fixtures import FIXTURES_DIR, fixture_paths, materialize

FHIR_JSON = "application/fhir+json"
_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_LITERAL_REFERENCE = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})$")
# Referenced resources load-fixtures creates as bare stubs when no fixture defines them, so that
# servers enforcing referential integrity on write (HAPI does by default) accept the data.
_STUBS: dict[str, dict[str, Any]] = {
    "Patient": {},
    "Practitioner": {},
    "PractitionerRole": {},
    "Organization": {},
    "Location": {},
    "RelatedPerson": {},
    "Encounter": {
        "status": "unknown",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
    },
}
INDICATOR_ORDER = {"critical": 0, "warning": 1, "info": 2}
_ANSI = {"critical": "\033[1;31m", "warning": "\033[1;33m", "info": "\033[1;34m"}


class CliError(Exception):
    """A failure the user can act on: printed as one line, exit code ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# ------------------------------------------------------------------------------------------------
# plumbing shared by the commands
# ------------------------------------------------------------------------------------------------
def one_line_errors(fn: Handler) -> Handler:
    """Turn every expected failure into ``error: <one line>`` on stderr and a non-zero exit."""

    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        from cds_service.knowledge.loader import KnowledgeError
        from cds_service.validation.request import RequestError

        try:
            return fn(args)
        except CliError as exc:
            return _fail(str(exc), exc.code)
        except RequestError as exc:
            return _fail(f"the request is not valid ({exc.code}): {exc.message}")
        except KnowledgeError as exc:
            return _fail(f"knowledge under cards/ is broken: {exc}")
        except SettingsError:
            raise  # __main__ prints these itself (exit code 2)
        except BrokenPipeError:  # `... | head`: the reader left; nothing more to say
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        except requests.RequestException as exc:
            return _fail(f"HTTP request failed: {_exc_line(exc)}")
        except OSError as exc:
            return _fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))

    return run


def _exc_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__


def _fail(message: str, code: int = 1) -> int:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    return code


class Progress:
    """Progress lines on stderr (never stdout: stdout carries results, e.g. --json)."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet

    def __call__(self, message: str) -> None:
        if not self.quiet:
            print(message, file=sys.stderr, flush=True)


def parse_now(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise CliError(f"--now: not an ISO 8601 date-time: {value!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def clock_for(now: datetime | None) -> Clock:
    return fixed_clock(now) if now is not None else system_clock


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise CliError(f"no such file: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CliError(f"{path} is not valid JSON (line {exc.lineno}: {exc.msg})") from exc


def is_fixture(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("request"), dict) and "hook" in data


def settings_mapping(settings: Settings, **changes: Any) -> dict[str, Any]:
    values = {f.name: getattr(settings, f.name) for f in fields(Settings)}
    values.update(changes)
    return values


def service_for_hook(knowledge: Any, hook: str, service_id: str | None = None) -> Any:
    if service_id:
        if service_id not in knowledge.services:
            raise CliError(f"no service {service_id!r}; known: {', '.join(knowledge.services)}")
        return knowledge.services[service_id]
    matching = [s for s in knowledge.services.values() if s.hook == hook]
    if not matching:
        raise CliError(f"no service answers the hook {hook!r}")
    return matching[0]


def _knowledge(settings: Settings) -> Any:
    from cds_service.knowledge.loader import load_knowledge

    return load_knowledge(settings.cards_dir)


# ------------------------------------------------------------------------------------------------
# printing cards
# ------------------------------------------------------------------------------------------------
def recommendation_id(card: Mapping[str, Any]) -> str:
    return str(((card.get("source") or {}).get("topic") or {}).get("code") or "?")


def why_line(detail: str) -> str:
    """The card's reason in one paragraph, markdown emphasis and links flattened."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", detail or "") if p.strip()]
    index = next((i for i, p in enumerate(paragraphs) if "why this card" in p.lower()), 0)
    chosen = paragraphs[index] if paragraphs else ""
    if chosen.endswith(":") and index + 1 < len(paragraphs):
        # "... red flags, latest on <date>:" introduces the list that names them.
        items = [line.strip().lstrip("-* ").strip() for line in paragraphs[index + 1].splitlines()]
        chosen = f"{chosen} " + "; ".join(item.replace("*", "") for item in items if item)
    chosen = re.sub(r"(?i)\*\*why this card:?\*\*:?\s*", "", chosen)
    chosen = re.split(r"\s\*\*[^*\n]{1,60}:\*\*", chosen)[0]  # stop at the next "**Label:**"
    chosen = re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", chosen)
    chosen = chosen.replace("**", "").replace("__", "")
    return " ".join(chosen.split())


def _action_text(action: Mapping[str, Any]) -> str:
    kind = action.get("type", "?")
    resource = action.get("resource") or {}
    target = resource.get("resourceType") or action.get("resourceId") or ""
    description = action.get("description")
    text = f"{kind} {target}".strip()
    return f"{text}: {description}" if description else text


def format_cards(cards: Sequence[Mapping[str, Any]], *, full: bool = False,
                 colour: bool = False) -> str:
    if not cards:
        return "No cards."
    lines: list[str] = []
    for n, card in enumerate(cards, 1):
        indicator = str(card.get("indicator", "?"))
        tag = f"[{indicator.upper()}]"
        if colour and indicator in _ANSI:
            tag = f"{_ANSI[indicator]}{tag}\033[0m"
        lines.append(f"{n}. {tag} {card.get('summary', '')}")
        lines.append(f"   id:    {recommendation_id(card)}")
        if full:
            lines.append("   detail:")
            lines.extend(f"     {line}" for line in (card.get("detail") or "").splitlines())
        else:
            why = why_line(card.get("detail") or "")
            if why:
                lines.extend(textwrap.wrap(why, width=100, initial_indent="   why:   ",
                                           subsequent_indent="          "))
        suggestions = card.get("suggestions") or []
        if suggestions:
            lines.append("   suggestions:")
            for s in suggestions:
                mark = " (recommended)" if s.get("isRecommended") else ""
                lines.append(f"     - {s.get('label', '')}{mark}")
                for action in s.get("actions") or []:
                    lines.append(f"         {_action_text(action)}")
        for link in card.get("links") or []:
            lines.append(f"   link:  {link.get('label', '')} <{link.get('url', '')}>")
        source = card.get("source") or {}
        if source.get("label"):
            url = f" <{source['url']}>" if source.get("url") else ""
            lines.append(f"   source: {source['label']}{url}")
        reasons = [r.get("display") or r.get("code") for r in card.get("overrideReasons") or []]
        if reasons:
            lines.append(f"   override reasons: {'; '.join(str(r) for r in reasons)}")
        lines.append("")
    return "\n".join(lines).rstrip()


def _colour_wanted() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def print_cards(cards: Sequence[Mapping[str, Any]], args: argparse.Namespace,
                header: str | None = None) -> None:
    if getattr(args, "json", False):
        print(json.dumps({"cards": list(cards)}, indent=2, ensure_ascii=False))
        return
    if header:
        print(header)
        print()
    print(format_cards(cards, full=getattr(args, "full", False), colour=_colour_wanted()))


def compare_expected(expected: Sequence[Mapping[str, Any]],
                     cards: Sequence[Mapping[str, Any]]) -> list[str]:
    """Differences between a fixture's expected cards and the cards returned (empty: a match)."""
    want = {str(e["id"]): e.get("indicator") for e in expected}
    got: dict[str, str] = {}
    for card in cards:
        got.setdefault(recommendation_id(card), str(card.get("indicator")))
    problems = [f"missing {rec}" for rec in sorted(set(want) - set(got))]
    problems += [f"unexpected {rec}" for rec in sorted(set(got) - set(want))]
    for rec in sorted(set(want) & set(got)):
        if want[rec] and want[rec] != got[rec]:
            problems.append(f"{rec} is {got[rec]}, expected {want[rec]}")
    return problems


# ------------------------------------------------------------------------------------------------
# evaluate
# ------------------------------------------------------------------------------------------------
def offline_pipeline(settings: Settings, clock: Clock) -> Any:
    """The service's pipeline without Flask or a database (nothing is recorded)."""
    from cds_service.pipeline import Pipeline
    from cds_service.runtime import new_session

    return Pipeline(settings, _knowledge(settings), clock, new_session(settings),
                    ThreadPoolExecutor(max_workers=settings.fhir_max_workers), None)


@one_line_errors
def evaluate_command(args: argparse.Namespace) -> int:
    from cds_service.pipeline import PrefetchUnavailable

    now = parse_now(args.now) or system_clock()
    data = read_json(args.file)
    expected: list[dict[str, Any]] | None = None
    if is_fixture(data):
        expected = list(data.get("expected") or [])
        body = materialize(data["request"], now)
    elif isinstance(data, dict) and "hook" in data:
        body = materialize(data, now)
    else:
        raise CliError(f"{args.file} is neither a hook request nor a fixture (no 'hook' member)")
    settings = Settings.from_env().replace(record_issued_cards=False)
    pipeline = offline_pipeline(settings, fixed_clock(now))
    service = service_for_hook(pipeline.knowledge, str(body.get("hook")), args.service)
    try:
        result = pipeline.call(service.id, body)
    except PrefetchUnavailable as exc:
        missing = ", ".join(f"{f.key} ({f.reason})" for f in exc.failures)
        raise CliError(f"prefetch incomplete and not fetchable: {missing}") from exc
    finally:
        pipeline.executor.shutdown(wait=False)
    cards = result.body["cards"]
    patient = (body.get("context") or {}).get("patientId", "?")
    print_cards(cards, args, header=f"{service.id} · patient {patient} · {len(cards)} card(s)")
    if expected is not None:
        problems = compare_expected(expected, cards)
        verdict = "matches the fixture" if not problems else "DIFFERS: " + "; ".join(problems)
        print(f"expected {sorted(e['id'] for e in expected)}: {verdict}", file=sys.stderr)
        if problems and args.check:
            return 1
    return 0


def _configure_evaluate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="a CDS Hooks request (JSON) or a fixture from fhir_fixtures/")
    parser.add_argument("--json", action="store_true", help="print the response body as JSON")
    parser.add_argument("--full", action="store_true", help="print each card's whole detail")
    parser.add_argument("--now", help="evaluate as of this ISO date-time (default: the clock)")
    parser.add_argument("--service", help="service id (default: the one answering the hook)")
    parser.add_argument("--check", action="store_true",
                        help="for a fixture: exit 1 when the cards differ from 'expected'")


evaluate_command.configure = _configure_evaluate  # type: ignore[attr-defined]
command("evaluate", "run a hook request or fixture offline and print the cards")(evaluate_command)


# ------------------------------------------------------------------------------------------------
# fire
# ------------------------------------------------------------------------------------------------
def fhir_session() -> requests.Session:
    session = requests.Session()
    session.headers["User-Agent"] = "foot-drop-cds-cli/0.1"
    return session


def fetch_prefetch(
    service: Any,
    context: Mapping[str, Any],
    fhir_server: str,
    *,
    token: str | None = None,
    settings: Settings | None = None,
    session: requests.Session | None = None,
    timeout: float = 60.0,
    progress: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    """Expand the service's prefetch templates against ``fhir_server`` as an EHR would.

    A key whose failure mode is ``omit`` and that cannot be fetched is left out (the service may
    try it itself); any other failure is a :class:`CliError`.
    """
    from cds_service.fhir.selective import plain_json
    from cds_service.prefetch.fhir_client import FetchFailed, FetchLimits, fetch
    from cds_service.prefetch.templates import UnresolvedToken, expand

    settings = settings or Settings()
    limits = FetchLimits(max_pages=settings.fhir_max_pages,
                         max_bytes=int(settings.fhir_max_response_mb * 1024 * 1024))
    session = session or fhir_session()
    prefetch: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    for spec in service.prefetch:
        try:
            relative = expand(spec.template, context)
        except UnresolvedToken as exc:
            raise CliError(f"prefetch {spec.key}: the context has no value for {exc}") from exc
        started = time.monotonic()
        try:
            result = fetch(session, fhir_server, relative, token, deadline, limits)
        except FetchFailed as exc:
            if spec.on_failure == "omit":
                progress(f"  {spec.key:<20} skipped: {exc.reason} (optional)")
                continue
            raise CliError(f"prefetch {spec.key}: GET {relative} failed ({exc.reason})") from exc
        took = time.monotonic() - started
        value = result.value
        if value is None:
            if spec.key == "patient" or relative.startswith("Patient/"):
                raise CliError(f"{relative} was not found on {fhir_server}")
            progress(f"  {spec.key:<20} not found")
        elif value.get("resourceType") == "Bundle":
            count = len(value.get("entry") or [])
            more = " (TRUNCATED at the page cap)" if result.truncated else ""
            progress(f"  {spec.key:<20} {count:>4} resource(s), {result.pages} page(s), "
                     f"{took:.2f} s{more}")
        else:
            progress(f"  {spec.key:<20} {value.get('resourceType')}/{value.get('id', '')}")
        prefetch[spec.key] = plain_json(value)  # sent on as JSON: no skeletons
    return prefetch


def read_orders(path: str, now: datetime) -> tuple[dict[str, Any], list[str]]:
    """Draft orders and their default selections from a Bundle, one resource, or a fixture."""
    data = materialize(read_json(path), now)
    if is_fixture(data):
        context = data["request"].get("context") or {}
        if "draftOrders" not in context:
            raise CliError(f"{path}: the fixture has no context.draftOrders")
        return context["draftOrders"], list(context.get("selections") or [])
    if not isinstance(data, dict) or not isinstance(data.get("resourceType"), str):
        raise CliError(f"{path}: expected a FHIR Bundle of draft orders")
    bundle = data if data["resourceType"] == "Bundle" else {
        "resourceType": "Bundle", "type": "collection", "entry": [{"resource": data}]}
    selections = []
    for entry in bundle.get("entry") or []:
        resource = (entry or {}).get("resource") or {}
        if not resource.get("id"):
            raise CliError(f"{path}: every draft order needs an id (selections name them)")
        selections.append(f"{resource.get('resourceType')}/{resource['id']}")
    if not selections:
        raise CliError(f"{path}: the Bundle holds no orders")
    return bundle, selections


def build_request(
    hook: str,
    patient_id: str,
    *,
    user_id: str = "Practitioner/fd-cli-user",
    encounter_id: str | None = None,
    fhir_server: str | None = None,
    token: str | None = None,
    prefetch: Mapping[str, Any] | None = None,
    draft_orders: Mapping[str, Any] | None = None,
    selections: Sequence[str] = (),
) -> dict[str, Any]:
    context: dict[str, Any] = {"userId": user_id, "patientId": patient_id}
    if encounter_id:
        context["encounterId"] = encounter_id
    if hook == "order-select":
        context["selections"] = list(selections)
    if hook in ("order-select", "order-sign"):
        context["draftOrders"] = draft_orders
    body: dict[str, Any] = {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context}
    if fhir_server:
        body["fhirServer"] = fhir_server
        if token:
            body["fhirAuthorization"] = {
                "access_token": token, "token_type": "Bearer", "expires_in": 300,
                "scope": "user/*.read", "subject": "foot-drop-cds",
            }
    if prefetch is not None:
        body["prefetch"] = dict(prefetch)
    return body


def in_process_app(settings: Settings, clock: Clock, workdir: str) -> Any:
    from cds_service import create_app

    config = settings_mapping(
        settings, database_url=f"sqlite:///{Path(workdir) / 'cli.sqlite3'}", auth="off",
        record_issued_cards=False, metrics_enabled=False, preview_enabled=False,
        log_level="ERROR",
    )
    return create_app(config, clock=clock)


def _outcome_text(response: Any, body: Any) -> str:
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        texts = [i.get("diagnostics") or (i.get("details") or {}).get("text") or i.get("code")
                 for i in body.get("issue") or []]
        return "; ".join(str(t) for t in texts if t) or "OperationOutcome"
    return str(body)[:200] if body is not None else (getattr(response, "text", "") or "")[:200]


def call_service(service_id: str, body: Mapping[str, Any], *, service_url: str | None,
                 service_token: str | None, settings: Settings, clock: Clock,
                 timeout: float = 30.0) -> dict[str, Any]:
    """POST the hook request to the service (in process, or at ``service_url``)."""
    if service_url:
        base = service_url.rstrip("/")
        url = f"{base}/{service_id}" if base.endswith("/cds-services") else (
            f"{base}/cds-services/{service_id}")
        headers = {"Accept": "application/json"}
        if service_token:
            headers["Authorization"] = f"Bearer {service_token}"
        response = requests.post(url, json=body, headers=headers, timeout=timeout)
        try:
            payload = response.json()
        except ValueError:
            payload = None
        status = response.status_code
    else:
        with tempfile.TemporaryDirectory(prefix="cds-cli-") as workdir:
            app = in_process_app(settings, clock, workdir)
            response = app.test_client().post(f"/cds-services/{service_id}", json=body)
            payload = response.get_json(silent=True)
            status = response.status_code
            app.extensions["cds"].database.dispose()
    if status != 200 or not isinstance(payload, dict):
        raise CliError(f"the service answered {status}: {_outcome_text(response, payload)}")
    return payload


@one_line_errors
def fire_command(args: argparse.Namespace) -> int:
    if args.all_patients:
        from cds_service.population import fire_all_command

        return fire_all_command(args)
    if not args.patient:
        raise CliError("name a patient (--patient ID) or run every one (--all-patients)")
    progress = Progress(args.quiet)
    now = parse_now(args.now)
    settings = Settings.from_env()
    knowledge = _knowledge(settings)
    service = service_for_hook(knowledge, args.hook)
    base = args.fhir_server.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise CliError("--fhir-server must be an http(s) URL")
    draft_orders, selections = None, []
    if args.hook in ("order-select", "order-sign"):
        if not args.orders:
            raise CliError(f"{args.hook} needs --orders FILE (a Bundle of draft orders)")
        draft_orders, selections = read_orders(args.orders, now or system_clock())
        if args.select:
            available = set(selections) | {
                f"{(e.get('resource') or {}).get('resourceType')}/"
                f"{(e.get('resource') or {}).get('id')}"
                for e in draft_orders.get("entry") or []}
            unknown = [s for s in args.select if s not in available]
            if unknown:
                raise CliError(f"--select names orders not in {args.orders}: {', '.join(unknown)}")
            selections = list(args.select)
    elif args.orders:
        raise CliError("--orders only applies to --hook order-select or order-sign")
    context = {"userId": args.user, "patientId": args.patient}
    if args.encounter:
        context["encounterId"] = args.encounter
    prefetch = None
    if not args.no_prefetch:
        progress(f"prefetching {len(service.prefetch)} key(s) from {base}")
        prefetch = fetch_prefetch(service, context, base, token=args.token, settings=settings,
                                  timeout=args.timeout, progress=progress)
    body = build_request(args.hook, args.patient, user_id=args.user,
                         encounter_id=args.encounter, fhir_server=base, token=args.token,
                         prefetch=prefetch, draft_orders=draft_orders, selections=selections)
    target = args.service or "the service in process"
    progress(f"calling {service.id} ({target})")
    response = call_service(service.id, body, service_url=args.service,
                            service_token=args.service_token, settings=settings,
                            clock=clock_for(now), timeout=args.timeout)
    cards = response.get("cards") or []
    print_cards(cards, args,
                header=f"{service.id} · patient {args.patient} · {len(cards)} card(s)")
    return 0


def _configure_fire(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fhir-server", required=True, help="FHIR R4 base URL holding the patient")
    parser.add_argument("--patient", help="Patient id on that server")
    parser.add_argument("--all-patients", action="store_true",
                        help="patient-view for every Patient on the server, with a progress bar "
                        "and a summary (answers by status, cards by id, slowest patients)")
    parser.add_argument("--hook", choices=("patient-view", "order-select", "order-sign"),
                        default="patient-view")
    parser.add_argument("--orders", help="order-select/order-sign: a Bundle of draft orders "
                        "(or a fixture)")
    parser.add_argument("--select", action="append", metavar="TYPE/ID",
                        help="order-select: the selected order(s) (default: all in --orders)")
    parser.add_argument("--token", help="bearer token for the FHIR server (sent as "
                        "fhirAuthorization so the service can use it too)")
    parser.add_argument("--user", default="Practitioner/fd-cli-user",
                        help="context.userId (default: %(default)s)")
    parser.add_argument("--encounter", help="context.encounterId")
    parser.add_argument("--service", metavar="URL",
                        help="the service's base URL (default: call it in process)")
    parser.add_argument("--service-token", help="a JWT for a service that requires CDS_AUTH")
    parser.add_argument("--no-prefetch", action="store_true",
                        help="send no prefetch: the service fetches everything itself")
    parser.add_argument("--now", help="in-process service clock, ISO date-time (tests pin it)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds (default: 60)")
    parser.add_argument("--json", action="store_true", help="print the response body as JSON")
    parser.add_argument("--full", action="store_true", help="print each card's whole detail")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


fire_command.configure = _configure_fire  # type: ignore[attr-defined]
command("fire", "act like an EHR: prefetch from a FHIR server, call the service")(fire_command)


# ------------------------------------------------------------------------------------------------
# load-fixtures
# ------------------------------------------------------------------------------------------------
@dataclass
class FixtureUpload:
    name: str
    patient_id: str
    bundle: dict[str, Any]


@dataclass
class UploadPlan:
    uploads: list[FixtureUpload] = field(default_factory=list)
    stubs: dict[str, Any] | None = None  # a transaction Bundle of referenced-but-absent resources
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (fixture, reason)
    conflicts: list[str] = field(default_factory=list)  # fixtures that would see each other's data
    dangling: list[str] = field(default_factory=list)  # references no fixture or stub satisfies

    @property
    def warnings(self) -> list[str]:
        return self.conflicts + self.dangling

    def bundles(self) -> list[tuple[str, dict[str, Any]]]:
        out = [("(referenced resources)", self.stubs)] if self.stubs else []
        return out + [(u.name, u.bundle) for u in self.uploads]


def fixture_label(path: Path, root: Path = FIXTURES_DIR) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()).with_suffix(""))
    except ValueError:
        return path.stem


def round_trips(data: Mapping[str, Any]) -> bool:
    """False when a fixture opts out of the FHIR-server round trip (``"roundTrip": false``)."""
    return data.get("roundTrip", True) is not False


def _stable_id(label: str, key: str, index: int) -> str:
    raw = re.sub(r"[^A-Za-z0-9\-.]", "-", f"{Path(label).name}-{key}-{index}")
    if len(raw) <= 64:
        return raw
    return f"{raw[:47]}-{hashlib.sha256(raw.encode()).hexdigest()[:16]}"


def prefetch_resources(label: str, prefetch: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every resource in a fixture's prefetch (Patient, searchset entries), no OperationOutcome."""
    found: list[dict[str, Any]] = []

    def add(key: str, resource: Any, index: int) -> None:
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            return
        kind = resource["resourceType"]
        if kind == "OperationOutcome":
            return
        if kind == "Bundle":
            for i, entry in enumerate(resource.get("entry") or []):
                if isinstance(entry, dict):
                    add(key, entry.get("resource"), i)
            return
        resource = json.loads(json.dumps(resource))
        if not isinstance(resource.get("id"), str) or not _FHIR_ID.match(resource["id"]):
            resource["id"] = _stable_id(label, key, index)
        meta = resource.get("meta")
        if isinstance(meta, dict):
            meta.pop("versionId", None)
            meta.pop("lastUpdated", None)
            if not meta:
                del resource["meta"]
        found.append(resource)

    for key, value in prefetch.items():
        add(key, value, 0)
    return found


def _references(node: Any) -> Iterable[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                match = _LITERAL_REFERENCE.match(value)
                if match:
                    yield match.group(1), match.group(2)
            else:
                yield from _references(value)
    elif isinstance(node, list):
        for item in node:
            yield from _references(item)


def _load_order(resource: Mapping[str, Any]) -> int:
    """Patients first, then what others refer to: each chunk of a split Bundle stays loadable."""
    kind = resource["resourceType"]
    return 0 if kind == "Patient" else 1 if kind in _STUBS else 2


def transaction(resources: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    resources = sorted(resources, key=_load_order)  # stable: fixture order within a rank
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"{r['resourceType']}/{r['id']}",
                "resource": r,
                "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
            }
            for r in resources
        ],
    }


def plan_upload(paths: Sequence[Path], now: datetime, *, include_all: bool = False,
                root: Path = FIXTURES_DIR) -> UploadPlan:
    """One transaction Bundle per fixture (PUT Type/id, so loading twice changes nothing)."""
    plan = UploadPlan()
    owner: dict[tuple[str, str], tuple[str, str]] = {}  # (type, id) -> (fixture, canonical json)
    patients: dict[str, str] = {}
    referenced: dict[tuple[str, str], str] = {}
    for path in paths:
        label = fixture_label(path, root)
        data = read_json(path)
        if not is_fixture(data):
            plan.skipped.append((label, "not a fixture"))
            continue
        if not round_trips(data) and not include_all:
            plan.skipped.append((label, "roundTrip: false"))
            continue
        request = materialize(data["request"], now)
        context = request.get("context") or {}
        patient_id = str(context.get("patientId", ""))
        if patient_id in patients:
            plan.conflicts.append(f"{label} and {patients[patient_id]} share Patient/{patient_id}:"
                                 " a server search returns the data of both")
        patients.setdefault(patient_id, label)
        unique: dict[tuple[str, str], dict[str, Any]] = {}
        for resource in prefetch_resources(label, request.get("prefetch") or {}):
            unique[(resource["resourceType"], resource["id"])] = resource
        for ref_key, resource in unique.items():
            canonical = json.dumps(resource, sort_keys=True)
            if ref_key in owner and owner[ref_key][1] != canonical:
                plan.conflicts.append(f"{'/'.join(ref_key)} differs between {owner[ref_key][0]} "
                                     f"and {label}: the one loaded last wins")
            owner.setdefault(ref_key, (label, canonical))
            for ref in _references(resource):
                referenced.setdefault(ref, label)
        user = context.get("userId")
        if isinstance(user, str) and _LITERAL_REFERENCE.match(user):
            kind, _, user_id = user.partition("/")
            referenced.setdefault((kind, user_id), label)
        referenced.setdefault(("Patient", patient_id), label)
        if unique:
            plan.uploads.append(FixtureUpload(label, patient_id, transaction(unique.values())))
        else:
            plan.skipped.append((label, "no resources in its prefetch"))
    stubs = []
    for (kind, ref_id), label in sorted(referenced.items()):
        if (kind, ref_id) in owner:
            continue
        if kind in _STUBS:
            stubs.append({"resourceType": kind, "id": ref_id, **_STUBS[kind]})
        else:
            plan.dangling.append(f"{label} refers to {kind}/{ref_id}, which no fixture holds")
    if stubs:
        plan.stubs = transaction(stubs)
    return plan


def wait_for_server(session: requests.Session, base: str, seconds: float,
                    progress: Callable[[str], None]) -> None:
    deadline = time.monotonic() + seconds
    announced = False
    while True:
        try:
            response = session.get(f"{base}/metadata", headers={"Accept": FHIR_JSON}, timeout=10)
            if response.status_code == 200:
                return
            problem = f"GET /metadata answered {response.status_code}"
        except requests.RequestException as exc:
            problem = f"{type(exc).__name__}"
        if time.monotonic() >= deadline:
            raise CliError(f"the FHIR server at {base} is not ready after {seconds:.0f} s "
                           f"({problem})")
        if not announced:
            progress(f"waiting up to {seconds:.0f} s for {base} ({problem})")
            announced = True
        time.sleep(2)


def post_transaction(session: requests.Session, base: str, bundle: Mapping[str, Any],
                     token: str | None, timeout: float) -> None:
    headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    response = session.post(f"{base}/", data=json.dumps(bundle), headers=headers,
                            timeout=timeout)
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != 200 or not isinstance(body, dict) or (
            body.get("type") != "transaction-response"):
        raise CliError(f"HTTP {response.status_code}: {_outcome_text(response, body)}"[:400])
    statuses = [str((e.get("response") or {}).get("status", "")) for e in body.get("entry") or []]
    bad = [s for s in statuses if not s.startswith(("200", "201"))]
    if bad:
        raise CliError(f"entries answered {', '.join(sorted(set(bad)))}")


def load_fixtures(base: str, paths: Sequence[Path], now: datetime, *, token: str | None = None,
                  include_all: bool = False, timeout: float = 60.0, batch_size: int = 50,
                  session: requests.Session | None = None,
                  progress: Callable[[str], None] = lambda _m: None) -> UploadPlan:
    """Upload the fixtures; returns the plan. Raises CliError naming the fixtures that failed.

    Servers cap transaction size (medplum: 50 updates), so a large Bundle goes in chunks of
    ``batch_size`` entries, Patients first.
    """
    if batch_size < 1:
        raise CliError("--batch-size must be at least 1")
    plan = plan_upload(paths, now, include_all=include_all)
    session = session or fhir_session()
    for name, reason in plan.skipped:
        progress(f"skip {name}: {reason}")
    for warning in plan.warnings:
        progress(f"warning: {warning}")
    bundles = plan.bundles()
    failed: list[str] = []
    for n, (name, bundle) in enumerate(bundles, 1):
        started = time.monotonic()
        entries = bundle["entry"]
        chunks = [entries[i:i + batch_size] for i in range(0, len(entries), batch_size)]
        prefix = f"[{n}/{len(bundles)}] {name}: {len(entries)} resource(s)"
        if len(chunks) > 1:
            prefix += f" in {len(chunks)} transactions"
        try:
            for chunk in chunks:
                post_transaction(session, base, {**bundle, "entry": chunk}, token, timeout)
        except (CliError, requests.RequestException) as exc:
            progress(f"{prefix} FAILED: {_exc_line(exc)}")
            failed.append(name)
            continue
        progress(f"{prefix} ok ({time.monotonic() - started:.2f} s)")
    if failed:
        raise CliError(f"{len(failed)} of {len(bundles)} bundles could not be loaded: "
                       f"{', '.join(failed)}")
    return plan


@one_line_errors
def load_fixtures_command(args: argparse.Namespace) -> int:
    progress = Progress(args.quiet)
    now = parse_now(args.now) or system_clock()
    paths: list[Path] = []
    for given in args.fixtures or [str(FIXTURES_DIR)]:
        path = Path(given)
        if path.is_dir():
            paths.extend(fixture_paths(path))
        elif path.is_file():
            paths.append(path)
        else:
            raise CliError(f"no such fixture file or directory: {given}")
    if not paths:
        raise CliError("no fixtures found")
    if args.dry_run:
        plan = plan_upload(paths, now, include_all=args.all)
        for warning in plan.warnings:
            progress(f"warning: {warning}")
        print(json.dumps([{"name": n, "bundle": b} for n, b in plan.bundles()], indent=2))
        return 0
    base = args.fhir_server.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise CliError("--fhir-server must be an http(s) URL")
    session = fhir_session()
    if args.wait:
        wait_for_server(session, base, args.wait, progress)
    progress(f"loading {len(paths)} fixture(s) into {base} (dates relative to "
             f"{now.isoformat(timespec='seconds')})")
    plan = load_fixtures(base, paths, now, token=args.token, include_all=args.all,
                         timeout=args.timeout, batch_size=args.batch_size, session=session,
                         progress=progress)
    patients = sorted({u.patient_id for u in plan.uploads})
    progress(f"done: {len(plan.uploads)} fixture(s), {len(patients)} patient(s)")
    return 0


def _configure_load_fixtures(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fhir-server", required=True, help="FHIR R4 base URL to upload to")
    parser.add_argument("fixtures", nargs="*",
                        help="fixture files or directories (default: fhir_fixtures/)")
    parser.add_argument("--now", help="materialise relative dates at this ISO date-time")
    parser.add_argument("--token", help="bearer token for the FHIR server")
    parser.add_argument("--all", action="store_true",
                        help="also load fixtures marked \"roundTrip\": false")
    parser.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                        help="wait this long for the server's /metadata first (containers)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    parser.add_argument("--batch-size", type=int, default=50,
                        help="entries per transaction (default: 50, medplum's limit)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the transaction Bundles as JSON instead of uploading")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


load_fixtures_command.configure = _configure_load_fixtures  # type: ignore[attr-defined]
command("load-fixtures", "upload fhir_fixtures/ patients to a FHIR server")(load_fixtures_command)


# ------------------------------------------------------------------------------------------------
# feedback-report
# ------------------------------------------------------------------------------------------------
def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def report_rows(stats: Sequence[Any]) -> list[dict[str, Any]]:
    rows = []
    for s in stats:
        rows.append({
            "recommendation": s.recommendation_id,
            "issued": s.issued,
            "cards": s.cards,
            "decided": s.decided,
            "accepted": s.accepted,
            "overridden": s.overridden,
            "snoozed": s.snoozed,
            "no_feedback": max(0, s.issued - s.decided),
            "acceptance_rate": _rate(s.accepted, s.issued),
            "override_rate": _rate(s.overridden, s.issued),
            "override_reasons": dict(sorted(s.override_reasons.items(),
                                            key=lambda kv: (-kv[1], kv[0]))),
        })
    return rows


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.0f}%"


def format_report(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "No cards issued and no feedback recorded yet."
    width = max(14, *(len(r["recommendation"]) for r in rows))
    head = (f"{'recommendation':<{width}}  {'issued':>6}  {'decided':>7}  {'accepted':>8}  "
            f"{'overridden':>10}  {'snoozed':>7}  {'no feedback':>11}  {'accept':>6}  "
            f"{'override':>8}  top override reasons")
    lines = [head, "-" * len(head)]
    for r in rows:
        reasons = ", ".join(f"{k} {v}" for k, v in list(r["override_reasons"].items())[:3])
        lines.append(
            f"{r['recommendation']:<{width}}  {r['issued']:>6}  {r['decided']:>7}  "
            f"{r['accepted']:>8}  {r['overridden']:>10}  {r['snoozed']:>7}  "
            f"{r['no_feedback']:>11}  {_pct(r['acceptance_rate']):>6}  "
            f"{_pct(r['override_rate']):>8}  {reasons}")
    issued = sum(r["issued"] for r in rows)
    decided = sum(r["decided"] for r in rows)
    accepted = sum(r["accepted"] for r in rows)
    overridden = sum(r["overridden"] for r in rows)
    snoozed = sum(r["snoozed"] for r in rows)
    lines.append("-" * len(head))
    lines.append(
        f"{'all':<{width}}  {issued:>6}  {decided:>7}  {accepted:>8}  {overridden:>10}  "
        f"{snoozed:>7}  {max(0, issued - decided):>11}  {_pct(_rate(accepted, issued)):>6}  "
        f"{_pct(_rate(overridden, issued)):>8}")
    lines.append("")
    lines.append("Counts are decisions, not hook calls: one per patient, recommendation and draft "
                 "order (patient-view: per day); a decision's latest feedback is its outcome. "
                 "Rates are per decision. '(unknown card)' is feedback on cards this database "
                 "did not record (CDS_RECORD_ISSUED_CARDS off, or another database).")
    return "\n".join(lines)


@one_line_errors
def feedback_report_command(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from cds_service.storage.db import Database

    url = args.database_url or Settings.from_env().database_url
    sqlite_file = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else None
    if sqlite_file and sqlite_file != ":memory:" and not Path(sqlite_file).is_file():
        raise CliError(f"no feedback database at {sqlite_file} "
                       "(set CDS_DATABASE_URL or --database-url)")
    database = Database(url)
    try:
        database.migrate()  # idempotent; the service does the same at start
        rows = report_rows(database.recommendation_stats())
    except SQLAlchemyError as exc:
        raise CliError(f"cannot read the feedback database: {type(exc).__name__}: "
                       f"{_exc_line(exc.orig if getattr(exc, 'orig', None) else exc)}") from exc
    finally:
        database.dispose()
    rows = [r for r in rows
            if r["issued"] >= args.min_issued or r["recommendation"] == "(unknown card)"]
    if args.json:
        print(json.dumps({"recommendations": rows}, indent=2))
    else:
        print(format_report(rows))
    return 0


def _configure_feedback_report(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", help="SQLAlchemy URL (default: CDS_DATABASE_URL)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--min-issued", type=int, default=0,
                        help="hide recommendations issued fewer times than this")


feedback_report_command.configure = _configure_feedback_report  # type: ignore[attr-defined]
command("feedback-report", "acceptance and override rates per recommendation")(
    feedback_report_command)


# ------------------------------------------------------------------------------------------------
# fixture: print a scenario's hook request, ready to POST
# ------------------------------------------------------------------------------------------------
def find_fixture(name: str) -> Path:
    """A fixture by path, or by file name without .json (searched under fhir_fixtures/)."""
    path = Path(name)
    if path.is_file():
        return path
    matches = [p for p in fixture_paths() if p.stem == name or p.name == name]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise CliError(f"no fixture named {name!r} (see fhir_fixtures/)")
    raise CliError(f"{name!r} matches several fixtures: {', '.join(str(m) for m in matches)}")


@one_line_errors
def fixture_command(args: argparse.Namespace) -> int:
    data = read_json(find_fixture(args.name))
    if not is_fixture(data):
        raise CliError(f"{args.name} is not a fixture (no 'hook' and 'request')")
    now = parse_now(args.now) or datetime.now(UTC)
    print(json.dumps(materialize(data["request"], now), indent=2))
    return 0


def _configure_fixture(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="fixture file, or its name without .json")
    parser.add_argument("--now", help="materialise relative dates at this ISO date-time")


fixture_command.configure = _configure_fixture  # type: ignore[attr-defined]
command("fixture", "print a fixture's hook request with its dates materialised")(fixture_command)


# load-bundles and fire --all-patients live in population.py; importing it registers them.
import cds_service.population  # noqa: E402, F401
