"""Testing against a FHIR server holding a population, as developers do with a public sandbox.

``load-bundles``            PUT every resource of any folder of FHIR Bundles (``.json`` or
                            ``.json.gz``; Synthea exports, sandbox samples) onto a server.
``fire --all-patients``     run the hook for every Patient on the server, with a progress bar, and
                            print a summary: answers by status, cards by id and indicator, the
                            slowest patients.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from cds_service import cli
from cds_service.clock import Clock
from cds_service.commands import command
from cds_service.config import Settings

FHIR_JSON = "application/fhir+json"


# ------------------------------------------------------------------------------------------------
# load-bundles
# ------------------------------------------------------------------------------------------------
def bundle_files(folder: Path) -> list[Path]:
    """The Bundle files in ``folder`` (or ``folder`` itself when it is a file), sorted."""
    if folder.is_file():
        return [folder]
    if not folder.is_dir():
        raise cli.CliError(f"{folder} is not a file or folder")
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.name.endswith((".json", ".json.gz")))


def read_resources(path: Path) -> list[dict[str, Any]]:
    """Every resource of a Bundle file (any Bundle type), or the file's one resource."""
    raw = path.read_bytes()
    if path.name.endswith(".gz"):
        raw = gzip.decompress(raw)
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise cli.CliError(f"{path.name} is not JSON ({exc})") from exc
    if not isinstance(data, dict) or "resourceType" not in data:
        raise cli.CliError(f"{path.name} is not a FHIR resource")
    if data["resourceType"] != "Bundle":
        return [data]
    resources = [e.get("resource") for e in data.get("entry") or [] if isinstance(e, dict)]
    found = [r for r in resources if isinstance(r, dict) and r.get("resourceType") and r.get("id")]
    if len(found) != len(resources):
        raise cli.CliError(f"{path.name}: every entry needs a resource with resourceType and id "
                           "(PUT Type/id keeps loading idempotent)")
    return found


def load_bundles(base: str, paths: Sequence[Path], *, token: str | None = None,
                 batch_size: int = 50, timeout: float = 120.0,
                 session: requests.Session | None = None,
                 extra: Callable[[list[dict[str, Any]]], Iterable[dict[str, Any]]] | None = None,
                 progress: Callable[[str], None] = lambda _m: None) -> int:
    """PUT every resource of each file (transactions of ``batch_size``, Patients first); returns
    the number of resources loaded. ``extra`` adds resources per file (tests inject findings)."""
    if batch_size < 1:
        raise cli.CliError("--batch-size must be at least 1")
    session = session or cli.fhir_session()
    total = 0
    failed: list[str] = []
    for n, path in enumerate(paths, 1):
        started = time.monotonic()
        resources = read_resources(path)
        if extra is not None:
            resources = [*resources, *extra(resources)]
        bundle = cli.transaction(resources)
        entries = bundle["entry"]
        try:
            for i in range(0, len(entries), batch_size):
                cli.post_transaction(session, base, {**bundle, "entry": entries[i:i + batch_size]},
                                     token, timeout)
        except (cli.CliError, requests.RequestException) as exc:
            progress(f"[{n}/{len(paths)}] {path.name}: FAILED: {cli._exc_line(exc)}")
            failed.append(path.name)
            continue
        total += len(entries)
        progress(f"[{n}/{len(paths)}] {path.name}: {len(entries)} resource(s) ok "
                 f"({time.monotonic() - started:.2f} s)")
    if failed:
        raise cli.CliError(f"{len(failed)} of {len(paths)} files could not be loaded: "
                           f"{', '.join(failed)}")
    return total


@cli.one_line_errors
def load_bundles_command(args: argparse.Namespace) -> int:
    progress = cli.Progress(args.quiet)
    base = args.fhir_server.rstrip("/")
    paths = bundle_files(Path(args.folder))
    if not paths:
        raise cli.CliError(f"no .json or .json.gz files in {args.folder}")
    for path in paths:
        read_resources(path)  # a malformed file fails before anything is loaded
    session = cli.fhir_session()
    cli.wait_for_server(session, base, args.wait, progress)
    total = load_bundles(base, paths, token=args.token, batch_size=args.batch_size,
                         session=session, progress=progress)
    progress(f"done: {total} resource(s) from {len(paths)} file(s) on {base}")
    return 0


def _configure_load_bundles(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", help="a folder of FHIR Bundle files (.json, .json.gz), or one")
    parser.add_argument("--fhir-server", required=True, help="FHIR R4 base URL")
    parser.add_argument("--token", help="bearer token for the FHIR server")
    parser.add_argument("--batch-size", type=int, default=50,
                        help="entries per transaction (default: %(default)s; medplum caps at 50)")
    parser.add_argument("--wait", type=float, default=0.0,
                        help="seconds to wait for the server to answer /metadata (default: 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


load_bundles_command.configure = _configure_load_bundles  # type: ignore[attr-defined]
command("load-bundles", "upload any folder of FHIR Bundles to a FHIR server")(load_bundles_command)


# ------------------------------------------------------------------------------------------------
# fire --all-patients
# ------------------------------------------------------------------------------------------------
def patient_ids(base: str, *, token: str | None = None,
                session: requests.Session | None = None, timeout: float = 60.0) -> list[str]:
    """Every Patient id on the server, following the searchset's next links."""
    session = session or cli.fhir_session()
    headers = {"Accept": FHIR_JSON}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    url: str | None = f"{base}/Patient?_count=200&_elements=id"
    ids: list[str] = []
    while url:
        response = session.get(url, headers=headers, timeout=timeout)
        if response.status_code != 200:
            raise cli.CliError(f"GET {url} answered {response.status_code}")
        page = response.json()
        ids += [str(e["resource"]["id"]) for e in page.get("entry") or []
                if isinstance(e.get("resource"), dict) and e["resource"].get("id")]
        url = next((link.get("url") for link in page.get("link") or []
                    if link.get("relation") == "next"), None)
    return list(dict.fromkeys(ids))


@dataclass
class PatientRun:
    """One patient's answer."""

    patient_id: str
    status: int | str  # HTTP status, or "error" when the call itself failed
    seconds: float
    cards: list[tuple[str, str]] = field(default_factory=list)  # (recommendation id, indicator)
    error: str | None = None


def fire_patients(
    base: str, ids: Sequence[str], *, hook: str = "patient-view", prefetch: bool = True,
    settings: Settings, clock: Clock, token: str | None = None, service_url: str | None = None,
    service_token: str | None = None, timeout: float = 60.0,
    on_done: Callable[[PatientRun], None] = lambda _r: None,
) -> list[PatientRun]:
    """Run ``hook`` for each patient (prefetch expanded here, or none: the service fetches)."""
    knowledge = cli._knowledge(settings)
    service = cli.service_for_hook(knowledge, hook)
    session = cli.fhir_session()
    runs: list[PatientRun] = []
    with tempfile.TemporaryDirectory(prefix="cds-fire-all-") as workdir:
        app = None if service_url else cli.in_process_app(settings, clock, workdir)
        try:
            for patient_id in ids:
                runs.append(_fire_one(app, service, base, patient_id, hook, prefetch, settings,
                                      token, session, service_url, service_token, timeout))
                on_done(runs[-1])
        finally:
            if app is not None:
                app.extensions["cds"].database.dispose()
    return runs


def _fire_one(app: Any, service: Any, base: str, patient_id: str, hook: str, prefetch: bool,
              settings: Settings, token: str | None, session: requests.Session,
              service_url: str | None, service_token: str | None,
              timeout: float) -> PatientRun:
    started = time.monotonic()
    context = {"userId": "Practitioner/fd-cli-user", "patientId": patient_id}
    try:
        values = (cli.fetch_prefetch(service, context, base, token=token, settings=settings,
                                     session=session, timeout=timeout) if prefetch else None)
        body = cli.build_request(hook, patient_id, user_id=context["userId"], fhir_server=base,
                                 token=token, prefetch=values)
        if app is not None:
            response = app.test_client().post(f"/cds-services/{service.id}", json=body)
            status, payload = response.status_code, response.get_json(silent=True)
        else:
            assert service_url is not None  # no in-process app only when a URL is given
            base_url = service_url.rstrip("/")
            if not base_url.endswith("/cds-services"):
                base_url += "/cds-services"
            headers = {"Authorization": f"Bearer {service_token}"} if service_token else {}
            response = requests.post(f"{base_url}/{service.id}", json=body, headers=headers,
                                     timeout=timeout)
            status = response.status_code
            payload = response.json() if response.content else None
    except (cli.CliError, requests.RequestException, ValueError) as exc:
        return PatientRun(patient_id, "error", time.monotonic() - started, error=cli._exc_line(exc))
    seconds = time.monotonic() - started
    if status != 200:
        return PatientRun(patient_id, status, seconds, error=cli._outcome_text(None, payload))
    cards = [(cli.recommendation_id(c), str(c.get("indicator")))
             for c in (payload or {}).get("cards") or []]
    return PatientRun(patient_id, status, seconds, cards)


def summary(runs: Sequence[PatientRun], slowest: int = 5) -> str:
    """Answers by status, cards by id and indicator, the slowest patients."""
    lines = [f"{len(runs)} patient(s)", "answers by status:"]
    for status, n in sorted(Counter(str(r.status) for r in runs).items()):
        lines.append(f"  {status:<8} {n}")
    cards = Counter(card for r in runs for card in r.cards)
    with_cards = sum(1 for r in runs if r.cards)
    lines.append(f"cards: {sum(cards.values())} on {with_cards} patient(s)")
    for (rec_id, indicator), n in sorted(cards.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"  {rec_id:<32} {indicator:<9} {n}")
    lines.append("slowest patients:")
    for run in sorted(runs, key=lambda r: -r.seconds)[:slowest]:
        lines.append(f"  {run.patient_id:<40} {run.seconds:6.2f} s")
    errors = [r for r in runs if r.error]
    for run in errors[:10]:
        lines.append(f"error {run.patient_id}: {run.error}")
    return "\n".join(lines)


@cli.one_line_errors
def fire_all_command(args: argparse.Namespace) -> int:
    if args.hook != "patient-view":
        raise cli.CliError("--all-patients runs patient-view (order-select needs draft orders)")
    now = cli.parse_now(args.now)
    settings = Settings.from_env()
    base = args.fhir_server.rstrip("/")
    ids = patient_ids(base, token=args.token)
    if not ids:
        raise cli.CliError(f"no Patient on {base}")
    quiet = args.quiet or args.json
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), disable=quiet, console=_stderr_console()) as bar:
        task = bar.add_task("patient-view", total=len(ids))
        runs = fire_patients(
            base, ids, prefetch=not args.no_prefetch, settings=settings,
            clock=cli.clock_for(now), token=args.token, service_url=args.service,
            service_token=args.service_token, timeout=args.timeout,
            on_done=lambda _run: bar.advance(task),
        )
    if args.json:
        print(json.dumps([{"patientId": r.patient_id, "status": r.status,
                           "seconds": round(r.seconds, 3), "error": r.error,
                           "cards": [{"id": i, "indicator": ind} for i, ind in r.cards]}
                          for r in runs], indent=2))
    else:
        print(summary(runs))
    return 0 if all(r.status == 200 for r in runs) else 1


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(file=sys.stderr)


def iter_runs(runs: Iterable[PatientRun]) -> Iterator[tuple[str, list[str]]]:
    """(patient id, card ids) per run: what tests compare."""
    for run in runs:
        yield run.patient_id, [rec_id for rec_id, _ in run.cards]


def runs_by_patient(runs: Iterable[PatientRun]) -> Mapping[str, PatientRun]:
    return {run.patient_id: run for run in runs}
