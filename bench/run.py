"""Benchmark: does the service's cost grow with the data the rules need, not with the chart?

Prints tables and PASS/FAIL per target, and always exits 0 (it is a report, not a test).

1. In process, per chart size (S/M/L) and hook: the full service path through Flask's test client
   (WSGI request, selective decode of the body, request validation, prefetch resolution, record
   reading with the relevance filter and FHIR validation, facts, rules, card rendering, response
   check, issued-card insert, JSON request log, response encoding) beside the floor:
   ``orjson.loads`` of the same bytes. Requests cycle through several charts per size (different
   ids, values and dates, same vocabulary) so nothing request-specific is reused. Every chart's
   cards are also computed the old way (``orjson.loads`` of the whole body, then the pipeline)
   and must be identical.
2. Over HTTP at sizes S and L: ``python -m cds_service serve --workers 2`` (gunicorn, gthread,
   4 threads) and a bare endpoint under the same gunicorn settings that decodes the body with
   ``orjson.loads`` and returns the same cards (``bench/bare_app.py``), driven by the same
   concurrent keep-alive client on loopback. Then the memory a worker needs for L: its peak RSS
   while serving L requests above its idle RSS, against the body size.
3. FHIR fallback: no prefetch, ``fhirServer`` is a loopback server that delays every query by
   200 ms; the request time against the slowest single query, timed alone.

Usage: ``python bench/run.py [--quick] [--json FILE]`` (``make bench``).
"""

from __future__ import annotations

import argparse
import gc
import http.client
import logging
import multiprocessing
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT))

from charts import PATIENT_ID, SERVICE_IDS, SIZES, make_request  # noqa: E402

HOOKS = ("patient-view", "order-select")
TARGET_INPROC_RATIO = 1.0  # size L: service p50 / orjson.loads p50
TARGET_INPROC_S_MS = 3.0  # size S: service p50
TARGET_HTTP_L_RATIO = 1.25  # size L: time per request, service / bare decoding endpoint
TARGET_HTTP_S_SHARE = 0.50  # size S: throughput, service / bare decoding endpoint
TARGET_MEMORY_MULTIPLE = 2.0  # peak RSS serving L above idle RSS, in body sizes
TARGET_FALLBACK_SLACK_MS = 50.0


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
def pct(values: list[float], q: float) -> float:
    """Percentile by linear interpolation (q in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    line = "  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(headers, widths,
                                                                                  strict=True)))
    out = [line, "  ".join("-" * w for w in widths)]
    for row in cells:
        out.append("  ".join(c.rjust(w) if i else c.ljust(w)
                             for i, (c, w) in enumerate(zip(row, widths, strict=True))))
    return "\n".join(out)


def machine_report() -> list[str]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f", {int(line.split()[1]) // 1024} MiB RAM"
    except OSError:
        pass
    try:
        load = " load avg {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    except OSError:
        load = ""
    versions = []
    for dist in ("flask", "werkzeug", "gunicorn", "orjson", "msgspec", "fhir.resources",
                 "fhir-core", "pydantic", "pydantic-core", "jsonschema", "jinja2", "sqlalchemy",
                 "requests"):
        with suppress(metadata.PackageNotFoundError):
            versions.append(f"{dist} {metadata.version(dist)}")
    try:
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        rev = f"{rev}{' + uncommitted changes' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        rev = "unknown"
    return [
        f"date     {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"machine  {platform.system()} {platform.release()} {platform.machine()}; {cpu}; "
        f"{os.cpu_count()} CPUs{mem};{load}",
        f"python   {platform.python_implementation()} {platform.python_version()}",
        f"packages {', '.join(versions)}",
        f"code     git {rev}",
    ]


def describe_cards(cards: list[dict[str, Any]]) -> str:
    if not cards:
        return "(no cards)"
    return "; ".join(
        f"{c.get('source', {}).get('topic', {}).get('code', '?')} [{c.get('indicator')}]"
        for c in cards
    )


def strip_uuids(cards: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cards without their per-response uuids (also inside suggestions and links)."""
    text = orjson.dumps(cards).decode()
    return orjson.loads(re.sub(r'"uuid":"[^"]*"', '"uuid":""', text))


def quiet_app(now: datetime, db_dir: Path, **overrides: Any) -> Any:
    """The real app factory, its JSON request log formatted as usual but written to /dev/null."""
    from cds_service import create_app
    from cds_service.clock import fixed_clock

    config = {"database_url": f"sqlite:///{db_dir / 'bench.sqlite3'}", "auth": "off",
              "log_level": "INFO", **overrides}
    app = create_app(config, clock=fixed_clock(now))
    for handler in logging.getLogger().handlers:
        if getattr(handler, "_cds_json", False):
            handler.setStream(open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the run
    return app


# ------------------------------------------------------------------------------------------------
# 1. in process
# ------------------------------------------------------------------------------------------------
@dataclass
class InProc:
    size: str
    hook: str
    body_bytes: int
    resources: int
    n: int
    service_ms: list[float] = field(default_factory=list)
    floor_ms: list[float] = field(default_factory=list)
    stages: dict[str, list[float]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    cards: str = ""
    identical: bool = True  # cards equal to the full decoder's on every chart

    @property
    def ratio(self) -> float:
        return statistics.median(self.service_ms) / statistics.median(self.floor_ms)


def bench_in_process(args: argparse.Namespace, now: datetime, tmp: Path) -> list[InProc]:
    """Round robin over every (size, hook): each round runs S 8 times, M twice and L once per
    hook, so a change in machine load (this is a shared 2-CPU box) hits all sizes alike and the
    S-to-L comparison stays fair."""
    app = quiet_app(now, tmp)
    captured: list[Any] = []
    app.extensions.setdefault("cds_listeners", []).append(
        lambda event, _sid, payload: captured.append(payload) if event == "hook_result" else None
    )
    client = app.test_client()
    per_round = {"S": 8, "M": 2, "L": 1}
    rounds = 6 if args.quick else 20
    variants = 2 if args.quick else 3
    configs: list[tuple[InProc, list[bytes], str]] = []
    for size in args.sizes:
        for hook in HOOKS:
            bodies = [orjson.dumps(make_request(size, hook, now, seed=7 + v))
                      for v in range(variants)]
            n_cond, n_obs = SIZES[size]
            res = InProc(size, hook, len(bodies[0]), n_cond + n_obs, 0)
            configs.append((res, bodies, f"/cds-services/{SERVICE_IDS[hook]}"))
    pipeline = app.extensions["cds"].pipeline
    for res, bodies, url in configs:  # warm up (first-call imports, template caches)
        for body in bodies:
            selective = client.post(url, data=body, content_type="application/json").get_json()
            # the old way: the whole body decoded by orjson, then the same pipeline
            full = pipeline.call(url.rsplit("/", 1)[1], orjson.loads(body)).body
            if strip_uuids(selective["cards"]) != strip_uuids(full["cards"]):
                res.identical = False
    gc.collect()
    for _ in range(rounds):
        for res, bodies, url in configs:
            for _ in range(per_round.get(res.size, 1)):
                body = bodies[res.n % variants]
                t0 = time.perf_counter()
                orjson.loads(body)
                t1 = time.perf_counter()
                response = client.post(url, data=body, content_type="application/json")
                t2 = time.perf_counter()
                if response.status_code != 200:
                    raise SystemExit(f"{res.size} {res.hook}: HTTP {response.status_code} "
                                     f"{response.get_data(as_text=True)[:300]}")
                res.floor_ms.append((t1 - t0) * 1000)
                res.service_ms.append((t2 - t1) * 1000)
                result = captured.pop()
                captured.clear()
                for stage, ms in result.timings_ms.items():
                    res.stages.setdefault(stage, []).append(ms)
                res.counts = dict(result.counts)
                if res.n == 0:
                    res.cards = describe_cards(response.get_json()["cards"])
                res.n += 1
    return [res for res, _, _ in configs]


def report_in_process(results: list[InProc]) -> list[tuple[str, bool, str]]:
    print("\nIn process: full service path (Flask test client: decode + pipeline + encode) vs "
          "floor (orjson.loads of the same body)")
    rows = []
    for r in results:
        rows.append([
            f"{r.size} {r.hook}", f"{r.resources:,}", f"{r.body_bytes / 1e6:.2f} MB", r.n,
            f"{pct(r.service_ms, 50):.1f}", f"{pct(r.service_ms, 95):.1f}",
            f"{pct(r.service_ms, 99):.1f}", f"{pct(r.floor_ms, 50):.1f}",
            f"{pct(r.floor_ms, 95):.1f}", f"{r.ratio:.2f}x",
            f"{r.counts.get('resources_kept', '?')}/{r.counts.get('skipped_irrelevant', '?')}",
        ])
    print(table(["chart, hook", "Cond+Obs", "body", "n", "svc p50", "p95", "p99",
                 "floor p50", "p95", "svc/floor", "kept/dropped"], rows))
    print("(times in ms; kept = resources validated and used, dropped = irrelevant, never "
          "validated)")
    print(f"(cyclic GC here as in a served worker, set by cds_service.runtime.tune_gc: thresholds "
          f"{gc.get_threshold()}, {gc.get_freeze_count():,} start-up objects frozen; the floor "
          f"is measured under the same settings)")

    print("\nStage medians (ms) from the pipeline's own timings:")
    stage_names = list(results[0].stages) if results else []
    print(table(["chart, hook", *stage_names],
                [[f"{r.size} {r.hook}", *(f"{statistics.median(r.stages.get(s, [0])):.2f}"
                                          for s in stage_names)] for r in results]))
    print("\nCards returned (first request of each); 'same' = identical to the full decoder's "
          "cards on every chart of that size:")
    for r in results:
        print(f"  {r.size} {r.hook}: {r.cards}  [{'same' if r.identical else 'DIFFERENT'}]")

    outcomes = []
    by = {(r.size, r.hook): r for r in results}
    for hook in HOOKS:
        big = by.get(("L", hook))
        if big:
            outcomes.append((f"L {hook}: service p50 <= {TARGET_INPROC_RATIO:g}x orjson.loads",
                             big.ratio <= TARGET_INPROC_RATIO,
                             f"{big.ratio:.2f}x ({pct(big.service_ms, 50):.0f} vs "
                             f"{pct(big.floor_ms, 50):.0f} ms)"))
        small = by.get(("S", hook))
        if small:
            outcomes.append((f"S {hook}: service p50 <= {TARGET_INPROC_S_MS:g} ms in process",
                             pct(small.service_ms, 50) <= TARGET_INPROC_S_MS,
                             f"{pct(small.service_ms, 50):.1f} ms"))
        if big and small:
            time_growth = statistics.median(big.service_ms) / statistics.median(small.service_ms)
            size_growth = big.body_bytes / small.body_bytes
            outcomes.append((
                f"S->L {hook}: time grows no faster than request size",
                time_growth <= size_growth,
                f"time x{time_growth:.1f} vs size x{size_growth:.1f}",
            ))
    outcomes.append(("Cards identical to the full decoder's on every bench chart",
                     all(r.identical for r in results),
                     ", ".join(f"{r.size} {r.hook}" for r in results if not r.identical)
                     or "all same"))
    return outcomes


# ------------------------------------------------------------------------------------------------
# 2. over HTTP
# ------------------------------------------------------------------------------------------------
def _client_proc(port: int, path: str, bodies: list[bytes], threads: int, start_at: float,
                 stop_at: float, out: Any) -> None:
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def worker(offset: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine: list[float] = []
        i = offset
        while time.monotonic() < start_at:
            time.sleep(0.001)
        while True:
            t0 = time.monotonic()
            if t0 >= stop_at:
                break
            body = bodies[i % len(bodies)]
            i += 1
            try:
                conn.request("POST", path, body=body,
                             headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            t1 = time.monotonic()
            if ok:
                mine.append(t1 - t0)
            else:
                with lock:
                    errors[0] += 1
        conn.close()
        with lock:
            latencies.extend(mine)

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    out.put((latencies, errors[0]))


def load(port: int, path: str, bodies: list[bytes], seconds: float, procs: int,
         threads: int) -> tuple[float, float, float, int]:
    """Closed-loop load: procs x threads keep-alive connections for ``seconds``.
    Returns (requests/s, p50 ms, p95 ms, errors)."""
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    start_at = time.monotonic() + 0.3
    stop_at = start_at + seconds
    ps = [ctx.Process(target=_client_proc,
                      args=(port, path, bodies, threads, start_at, stop_at, out))
          for _ in range(procs)]
    for p in ps:
        p.start()
    latencies: list[float] = []
    errors = 0
    for _ in ps:
        lat, err = out.get(timeout=seconds + 60)
        latencies.extend(lat)
        errors += err
    for p in ps:
        p.join(timeout=10)
    return (len(latencies) / seconds, pct(latencies, 50) * 1000, pct(latencies, 95) * 1000,
            errors)


def wait_healthy(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                conn.close()
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("server did not become healthy")


@contextmanager
def server(cmd: list[str], port: int, env: dict[str, str], log: Path) -> Any:
    with open(log, "wb") as sink:
        proc = subprocess.Popen(cmd, env=env, stdout=sink, stderr=sink, cwd=ROOT,
                                start_new_session=True)
    try:
        wait_healthy(port, proc)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@dataclass
class HttpRun:
    size: str
    name: str
    rps: float
    p50: float
    p95: float
    errors: int


@dataclass
class MemoryRun:
    body_bytes: int
    idle_rss: int
    peak_rss: int


def _worker_pids(master: int) -> list[int]:
    try:
        text = Path(f"/proc/{master}/task/{master}/children").read_text()
    except OSError:
        return []
    return [int(pid) for pid in text.split()]


def _status_kib(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field_name} for {pid}")


def _post(port: int, path: str, body: bytes) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {data[:200]!r}")
    return orjson.loads(data)


def bench_http(args: argparse.Namespace, tmp: Path) -> tuple[list[HttpRun], dict[str, str]]:
    """S and L, service and bare decoding endpoint, alternating rounds in one run."""
    now = datetime.now(UTC)
    hook = "patient-view"
    path = f"/cds-services/{SERVICE_IDS[hook]}"
    plans = {  # size: (seconds, client processes, threads per process)
        "S": (3.0 if args.quick else 6.0, 2, 4),
        "L": (4.0 if args.quick else 8.0, 1, 2),
    }
    bodies = {size: [orjson.dumps(make_request(size, hook, now, seed=7 + v)) for v in range(2)]
              for size in plans}
    rounds = 1 if args.quick else 2
    env = {**os.environ, "CDS_DATABASE_URL": f"sqlite:///{tmp / 'http.sqlite3'}",
           "CDS_AUTH": "off", "CDS_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"}
    svc_port, bare_port = free_port(), free_port()
    svc_cmd = [sys.executable, "-m", "cds_service", "serve", "--host", "127.0.0.1",
               "--port", str(svc_port), "--workers", "2", "--threads", "4"]
    runs: list[HttpRun] = []
    cards: dict[str, str] = {}
    with server(svc_cmd, svc_port, env, tmp / "service.log"):
        first = _post(svc_port, path, bodies["S"][0])
        cards_file = tmp / "cards.json"
        cards_file.write_bytes(orjson.dumps(first))
        for size in plans:
            cards[size] = describe_cards(_post(svc_port, path, bodies[size][0])["cards"])
        bare_cmd = [sys.executable, "-m", "gunicorn", "--workers", "2", "--worker-class",
                    "cds_service.http.workers.JsonErrorsThreadWorker", "--threads", "4",
                    "--timeout", "30", "--graceful-timeout", "10",
                    "--keep-alive", "5", "--limit-request-line", "8190", "--error-logfile", "-",
                    "--bind", f"127.0.0.1:{bare_port}", "--chdir", str(BENCH), "bare_app:app"]
        bare_env = {**env, "BENCH_CARDS_FILE": str(cards_file)}
        with server(bare_cmd, bare_port, bare_env, tmp / "bare.log"):
            for size, (_seconds, procs, threads) in plans.items():  # warm up both
                load(bare_port, "/decode" + path, bodies[size], 1.0, procs, threads)
                load(svc_port, path, bodies[size], 1.0, procs, threads)
            for _ in range(rounds):
                for size, (seconds, procs, threads) in plans.items():
                    runs.append(HttpRun(size, "bare endpoint + orjson.loads", *load(
                        bare_port, "/decode" + path, bodies[size], seconds, procs, threads)))
                    runs.append(HttpRun(size, "service", *load(
                        svc_port, path, bodies[size], seconds, procs, threads)))
            seconds, procs, threads = plans["S"]
            runs.append(HttpRun("S", "(reference) bare endpoint, body read only",
                                *load(bare_port, path, bodies["S"], seconds, procs, threads)))
    return runs, cards


def bench_memory(tmp: Path) -> MemoryRun:
    """One worker, warmed up with the L requests (first-use imports and the bounded caches fill
    once per process, not per request): its RSS when idle, then its peak RSS (VmHWM, reset
    through /proc/<pid>/clear_refs) while it serves them again."""
    now = datetime.now(UTC)
    hook = "patient-view"
    path = f"/cds-services/{SERVICE_IDS[hook]}"
    large = [orjson.dumps(make_request("L", hook, now, seed=7 + v)) for v in range(2)]
    port = free_port()
    env = {**os.environ, "CDS_DATABASE_URL": f"sqlite:///{tmp / 'memory.sqlite3'}",
           "CDS_AUTH": "off", "CDS_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "cds_service", "serve", "--host", "127.0.0.1",
           "--port", str(port), "--workers", "1", "--threads", "4"]
    with server(cmd, port, env, tmp / "memory.log") as proc:
        for body in large:
            _post(port, path, body)
        time.sleep(0.5)
        workers = _worker_pids(proc.pid)
        if len(workers) != 1:
            raise RuntimeError(f"expected one worker, found {workers}")
        idle = _status_kib(workers[0], "VmRSS")
        Path(f"/proc/{workers[0]}/clear_refs").write_text("5")  # peak RSS := current RSS
        for body in large * 2:
            _post(port, path, body)
        peak = _status_kib(workers[0], "VmHWM")
    return MemoryRun(len(large[0]), idle, peak)


def report_http(runs: list[HttpRun], cards: dict[str, str], memory: MemoryRun | None,
                quick: bool) -> list[tuple[str, bool, str]]:
    print("\nOver HTTP, patient-view, gunicorn 2 workers x 4 threads (gthread), loopback; client "
          "closed loop, keep-alive: S 2 processes x 4 connections, L 1 process x 2 connections")
    print(table(["size", "server", "req/s", "p50 ms", "p95 ms", "errors"],
                [[r.size, r.name, f"{r.rps:.1f}", f"{r.p50:.1f}", f"{r.p95:.1f}", r.errors]
                 for r in runs]))
    for size, described in cards.items():
        print(f"Cards the service returned over HTTP at {size}: {described}")
    outcomes = []

    def median_rps(size: str, prefix: str) -> float:
        values = [r.rps for r in runs if r.size == size and r.name.startswith(prefix)]
        return statistics.median(values) if values else 0.0

    bare_s, svc_s = median_rps("S", "bare endpoint +"), median_rps("S", "service")
    share = svc_s / bare_s if bare_s else 0.0
    outcomes.append((f"HTTP S: service throughput >= {TARGET_HTTP_S_SHARE:.0%} of the bare "
                     "decoding endpoint's", share >= TARGET_HTTP_S_SHARE,
                     f"{share:.0%} ({svc_s:.0f} vs {bare_s:.0f} req/s)"))
    bare_l, svc_l = median_rps("L", "bare endpoint +"), median_rps("L", "service")
    ratio = bare_l / svc_l if svc_l else float("inf")
    outcomes.append((f"HTTP L: time per request <= {TARGET_HTTP_L_RATIO:g}x the bare decoding "
                     "endpoint's", ratio <= TARGET_HTTP_L_RATIO,
                     f"{ratio:.2f}x ({svc_l:.1f} vs {bare_l:.1f} req/s)"))
    read_only = median_rps("S", "(reference)")
    if read_only and bare_s:
        print(f"for scale at S: decoding the body costs the bare endpoint "
              f"{1 - bare_s / read_only:.0%} of its throughput")
    if not quick:
        print("(req/s: median of the rounds; service and bare endpoint alternate)")
    if memory is not None:
        above = memory.peak_rss - memory.idle_rss
        multiple = above / memory.body_bytes
        print(f"\nMemory, one worker serving L ({memory.body_bytes / 1e6:.1f} MB bodies): idle RSS "
              f"{memory.idle_rss / 1e6:.0f} MB, peak RSS {memory.peak_rss / 1e6:.0f} MB, "
              f"{above / 1e6:.1f} MB above idle = {multiple:.2f}x the body")
        outcomes.append((f"Memory: worker peak RSS serving L <= {TARGET_MEMORY_MULTIPLE:g}x the "
                         "body above idle", multiple <= TARGET_MEMORY_MULTIPLE,
                         f"{multiple:.2f}x ({above / 1e6:.1f} MB for a "
                         f"{memory.body_bytes / 1e6:.1f} MB body)"))
    return outcomes


# ------------------------------------------------------------------------------------------------
# 3. FHIR fallback
# ------------------------------------------------------------------------------------------------
def bench_fallback(args: argparse.Namespace, tmp: Path) -> list[tuple[str, bool, str]]:
    import requests

    from cds_service.knowledge.loader import load_knowledge
    from cds_service.prefetch.templates import expand

    now = datetime.now(UTC)
    delay_ms = 200
    proc = subprocess.Popen(
        [sys.executable, str(BENCH / "fhir_server.py"), "--size", "S", "--delay-ms",
         str(delay_ms), "--now", now.isoformat()],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert proc.stdout is not None
        base = orjson.loads(proc.stdout.readline())["base"]
        body = make_request("S", "patient-view", now, with_prefetch=False)
        body["fhirServer"] = base
        service_id = SERVICE_IDS["patient-view"]
        knowledge = load_knowledge(ROOT / "cards")
        spec = knowledge.services[service_id]
        queries = {p.key: expand(p.template, body["context"]) for p in spec.prefetch}

        # Each query alone, sequentially, on a warm keep-alive session.
        session = requests.Session()
        reps = 2 if args.quick else 3
        per_query: dict[str, float] = {}
        for key, relative in queries.items():
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                r = session.get(f"{base}/{relative}", timeout=10)
                r.content  # noqa: B018
                times.append((time.perf_counter() - t0) * 1000)
                assert r.status_code == 200, (key, r.status_code)
            per_query[key] = statistics.median(times)
        session.close()
        slowest_key = max(per_query, key=per_query.__getitem__)
        slowest = per_query[slowest_key]

        app = quiet_app(now, tmp, database_url=f"sqlite:///{tmp / 'fallback.sqlite3'}")
        captured: list[Any] = []
        app.extensions.setdefault("cds_listeners", []).append(
            lambda event, _sid, payload: captured.append(payload)
            if event == "hook_result" else None)
        client = app.test_client()
        raw = orjson.dumps(body)
        url = f"/cds-services/{service_id}"
        client.post(url, data=raw, content_type="application/json")  # warm the pool
        n = 5 if args.quick else 12
        times = []
        cards = ""
        fetched = 0
        prefetch_ms: list[float] = []
        for i in range(n):
            t0 = time.perf_counter()
            response = client.post(url, data=raw, content_type="application/json")
            times.append((time.perf_counter() - t0) * 1000)
            if response.status_code != 200:
                raise SystemExit(f"fallback: HTTP {response.status_code} "
                                 f"{response.get_data(as_text=True)[:300]}")
            result = captured.pop()
            fetched = len(result.fetched_keys)
            prefetch_ms.append(result.timings_ms.get("prefetch", 0.0))
            if i == 0:
                cards = describe_cards(response.get_json()["cards"])
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    p50 = pct(times, 50)
    print(f"\nFHIR fallback: no prefetch, loopback FHIR server delaying every query by "
          f"{delay_ms} ms, size S chart, {len(queries)} queries")
    print(table(["measure", "ms"], [
        [f"slowest single query alone ({slowest_key})", f"{slowest:.1f}"],
        ["fastest single query alone", f"{min(per_query.values()):.1f}"],
        [f"sum of the {len(queries)} queries (if run one after another)",
         f"{sum(per_query.values()):.1f}"],
        [f"service request p50 (n={n}, {fetched} keys fetched)", f"{p50:.1f}"],
        ["service request max", f"{max(times):.1f}"],
        ["  of which prefetch stage p50", f"{pct(prefetch_ms, 50):.1f}"],
    ]))
    print(f"Cards returned via fallback: {cards}")
    return [(f"Fallback: request p50 <= slowest query + {TARGET_FALLBACK_SLACK_MS:g} ms",
             p50 <= slowest + TARGET_FALLBACK_SLACK_MS,
             f"{p50:.0f} ms vs {slowest:.0f} + {TARGET_FALLBACK_SLACK_MS:g} ms")]


# ------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations (about 1 minute)")
    parser.add_argument("--sizes", default="S,M,L", help="chart sizes for the in-process part")
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--skip-fallback", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    args.sizes = [s.strip().upper() for s in args.sizes.split(",") if s.strip()]
    started = time.monotonic()

    print("Foot-drop CDS service benchmark" + (" (--quick)" if args.quick else ""))
    for line in machine_report():
        print(line)
    print(f"charts   patient {PATIENT_ID}; sizes " + ", ".join(
        f"{s} = {c} Conditions + {o:,} Observations" for s, (c, o) in SIZES.items()))

    outcomes: list[tuple[str, bool, str]] = []
    summary: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="cds-bench-") as tmp_name:
        tmp = Path(tmp_name)
        now = datetime.now(UTC)
        print("\n[1/3] in process ...", flush=True)
        inproc = bench_in_process(args, now, tmp)
        outcomes += report_in_process(inproc)
        summary["in_process"] = [
            {"size": r.size, "hook": r.hook, "bytes": r.body_bytes, "n": r.n,
             "service_ms": {q: pct(r.service_ms, q) for q in (50, 95, 99)},
             "floor_ms": {q: pct(r.floor_ms, q) for q in (50, 95, 99)}, "ratio": r.ratio,
             "counts": r.counts, "cards": r.cards} for r in inproc]
        if not args.skip_http:
            print("\n[2/3] over HTTP ...", flush=True)
            try:
                runs, cards = bench_http(args, tmp)
                memory: MemoryRun | None = None
                try:
                    memory = bench_memory(tmp)
                except Exception as exc:
                    print(f"Memory benchmark failed: {type(exc).__name__}: {exc}")
                    outcomes.append(("Memory", False, f"not measured ({exc})"))
                outcomes += report_http(runs, cards, memory, args.quick)
                summary["http"] = [r.__dict__ for r in runs]
                summary["memory"] = memory.__dict__ if memory else None
            except Exception as exc:  # a report, not a test: say what broke and go on
                print(f"HTTP benchmark failed: {type(exc).__name__}: {exc}")
                outcomes.append(("HTTP S throughput", False, f"not measured ({exc})"))
        if not args.skip_fallback:
            print("\n[3/3] FHIR fallback ...", flush=True)
            try:
                outcomes += bench_fallback(args, tmp)
            except Exception as exc:
                print(f"Fallback benchmark failed: {type(exc).__name__}: {exc}")
                outcomes.append(("Fallback", False, f"not measured ({exc})"))

    print("\nTargets")
    print(table(["target", "result", "measured"], [[t, verdict(ok), m] for t, ok, m in outcomes]))
    print(f"\n(run took {time.monotonic() - started:.0f} s)")
    if args.json:
        summary["targets"] = [{"target": t, "pass": ok, "measured": m} for t, ok, m in outcomes]
        args.json.write_text(orjson.dumps(
            summary, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
