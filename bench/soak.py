"""Soak test: drive a running service at a fixed rate for a set time; report errors, latency and
memory growth. Not a CI test (see docs/robustness.md).

    make serve &                                   # or: python -m cds_service serve --workers 2
    .venv/bin/python bench/soak.py --rate 20 --duration 300

Every request is one of the scenario fixtures (``fhir_fixtures/``, dates relative to now), posted
to its service; a share of requests are discovery calls and feedback for cards just received.
Requests are scheduled at fixed times (``i / rate``), not back to back, so a slow service shows up
as latency and a backlog, not as a lower rate. The client never keeps more than ``--concurrency``
requests in flight plus a small queue; scheduled requests that find the queue full are counted as
``skipped (client saturated)``.

Memory: the resident set size (RSS, from /proc) of the server process and all its descendants
(the gunicorn master and its workers) is sampled every second. Growth is measured from the end of
the warm-up to the end of the run; the trend compares the mean of the last quarter with the mean
of the first quarter after warm-up. ``--pid`` names the server process; without it the process
listening on the URL's port is found through /proc/net/tcp.

With CDS_AUTH=required, pass ``--sign-key`` (a PEM private key of a trusted issuer) with ``--iss``
and ``--kid``: every request then gets a fresh ES384/RS384 JWT (a jti is accepted once), with
``aud`` built from ``--public-base-url`` (default: the URL).

Loopback only: the URL must be 127.0.0.1, ::1 or localhost. Exit status 1 when any request
failed (transport error, 5xx, or a status no scenario expects) or memory grew past
``--max-growth-mb``.
"""

from __future__ import annotations

import argparse
import ipaddress
import itertools
import os
import queue
import random
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cds_service.fixtures import iter_fixtures  # noqa: E402

SERVICES = {"patient-view": "foot-drop-patient-view", "order-select": "foot-drop-order-select",
            "order-sign": "foot-drop-order-sign"}
EXPECTED = {200, 412}  # 412: a scenario whose data cannot be had is an answer, not an error


# -- the server process ---------------------------------------------------------------------------
def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def listening_pid(port: int) -> int | None:
    """The pid of a process with a listening socket on ``port`` (reads /proc, Linux only)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            local, state, inode = parts[1], parts[3], parts[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A = LISTEN
                inodes.add(inode)
    if not inodes:
        return None
    candidates = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    candidates.append(int(proc.name))
                    break
        except OSError:
            continue
    if not candidates:
        return None
    # gunicorn workers inherit the listening socket: report the oldest ancestor among them
    return min(candidates, key=lambda pid: (_start_time(pid), pid))


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()  # fields after the command name


def _start_time(pid: int) -> int:
    fields = _stat(pid)
    return int(fields[19]) if fields else 1 << 62


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            fields = _stat(int(proc.name))
            if fields:
                children.setdefault(int(fields[1]), []).append(int(proc.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def rss_mb(root: int) -> float | None:
    total = 0
    found = False
    for pid in process_tree(root):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    found = True
                    break
        except OSError:
            continue
    return total / 1024 if found else None


# -- tokens ---------------------------------------------------------------------------------------
class TokenMinter:
    def __init__(self, key_file: Path, iss: str, kid: str, base: str) -> None:
        import jwt

        self._jwt = jwt
        self._key = key_file.read_bytes()
        self._iss, self._kid, self._base = iss, kid, base.rstrip("/")
        self._alg = "RS384" if _is_rsa(self._key) else "ES384"

    def header(self, path: str) -> dict[str, str]:
        now = int(time.time())
        token = self._jwt.encode(
            {"iss": self._iss, "aud": self._base + path, "iat": now, "exp": now + 300,
             "jti": str(uuid.uuid4())},
            self._key, algorithm=self._alg, headers={"kid": self._kid, "typ": "JWT"})
        return {"Authorization": f"Bearer {token}"}


def _is_rsa(pem: bytes) -> bool:
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    return isinstance(load_pem_private_key(pem, password=None), rsa.RSAPrivateKey)


# -- the load -------------------------------------------------------------------------------------
@dataclass
class Results:
    lock: threading.Lock = field(default_factory=threading.Lock)
    latencies_ms: list[float] = field(default_factory=list)
    started_at: list[float] = field(default_factory=list)  # seconds since the run started
    statuses: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    skipped: int = 0
    cards: list[tuple[str, str]] = field(default_factory=list)  # (service, card uuid) for feedback

    def record(self, kind: str, status: int | None, started_at: float, elapsed_ms: float,
               problem: str | None) -> None:
        with self.lock:
            self.latencies_ms.append(elapsed_ms)
            self.started_at.append(started_at)
            self.statuses[f"{kind} {status}"] += 1
            if problem:
                self.errors[problem] += 1
                if len(self.error_samples) < 10:
                    self.error_samples.append(f"{kind}: {problem}")


class Driver:
    def __init__(self, args: argparse.Namespace, results: Results) -> None:
        self.url = args.url.rstrip("/")
        self.results = results
        self.timeout = args.timeout
        self.minter = (TokenMinter(Path(args.sign_key), args.iss, args.kid,
                                   args.public_base_url or self.url) if args.sign_key else None)
        self.local = threading.local()
        self.fixtures = [(SERVICES[f.hook], f.request) for f in iter_fixtures(datetime.now(UTC))]
        if not self.fixtures:
            raise SystemExit("no fixtures found under fhir_fixtures/")
        self.rng = random.Random(args.seed)
        self.rng_lock = threading.Lock()
        self.cycle = itertools.cycle(range(len(self.fixtures)))

    def session(self) -> requests.Session:
        if not hasattr(self.local, "session"):
            self.local.session = requests.Session()
            self.local.session.trust_env = False
        return self.local.session

    def headers(self, path: str) -> dict[str, str]:
        return self.minter.header(path) if self.minter else {}

    def pick(self) -> str:
        with self.rng_lock:
            roll = self.rng.random()
            has_cards = bool(self.results.cards)
        if roll < 0.05:
            return "discovery"
        if roll < 0.15 and has_cards:
            return "feedback"
        return "hook"

    def one(self, run_start: float) -> None:
        kind = self.pick()
        started = time.perf_counter()
        offset = time.monotonic() - run_start
        status, problem = None, None
        try:
            if kind == "discovery":
                path = "/cds-services"
                response = self.session().get(self.url + path, headers=self.headers(path),
                                              timeout=self.timeout)
                status = response.status_code
                if status != 200:
                    problem = f"discovery answered {status}"
            elif kind == "feedback":
                with self.results.lock:
                    service, card = self.rng.choice(self.results.cards)
                path = f"/cds-services/{service}/feedback"
                body = {"feedback": [{"card": card, "outcome": "overridden",
                                      "outcomeTimestamp": datetime.now(UTC).isoformat()}]}
                response = self.session().post(self.url + path, json=body,
                                               headers=self.headers(path), timeout=self.timeout)
                status = response.status_code
                if status != 200:
                    problem = f"feedback answered {status}"
            else:
                service, request = self.fixtures[next(self.cycle)]
                path = f"/cds-services/{service}"
                response = self.session().post(self.url + path, json=request,
                                               headers=self.headers(path), timeout=self.timeout)
                status = response.status_code
                if status not in EXPECTED:
                    problem = f"{service} answered {status}"
                elif status == 200:
                    cards = response.json().get("cards", [])
                    with self.results.lock:
                        for card in cards[:2]:
                            self.results.cards.append((service, card["uuid"]))
                        del self.results.cards[:-500]  # bounded
        except requests.RequestException as exc:
            problem = type(exc).__name__
        except ValueError:
            problem = "response body is not JSON"
        self.results.record(kind, status, offset, (time.perf_counter() - started) * 1000,
                            problem)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def run(args: argparse.Namespace) -> int:
    host = urlsplit(args.url).hostname or ""
    if not is_loopback(host):
        print(f"refusing to drive {host}: the soak test runs against loopback only",
              file=sys.stderr)
        return 2
    port = urlsplit(args.url).port or 80
    pid = args.pid or listening_pid(port)
    if pid is None:
        print(f"warning: no process found listening on port {port}; memory is not measured "
              "(pass --pid)", file=sys.stderr)
    try:
        requests.get(args.url.rstrip("/") + "/healthz", timeout=5).raise_for_status()
    except requests.RequestException as exc:
        print(f"the service at {args.url} is not answering /healthz: {exc}", file=sys.stderr)
        return 2

    results = Results()
    driver = Driver(args, results)
    samples: list[tuple[float, float]] = []  # (seconds since start, RSS MB)
    stop = threading.Event()
    start = time.monotonic()

    def sample() -> None:
        while not stop.is_set():
            if pid is not None:
                value = rss_mb(pid)
                if value is not None:
                    samples.append((time.monotonic() - start, value))
            stop.wait(1.0)

    sampler = threading.Thread(target=sample, name="rss-sampler", daemon=True)
    sampler.start()

    total = int(args.rate * args.duration)
    backlog: queue.Queue[None] = queue.Queue(maxsize=args.concurrency * 4)
    print(f"soak: {args.rate:g} req/s for {args.duration:g} s against {args.url} "
          f"({len(driver.fixtures)} fixtures, server pid {pid}, {total} requests)")

    def task() -> None:
        try:
            driver.one(start)
        finally:
            backlog.get_nowait()

    with ThreadPoolExecutor(max_workers=args.concurrency, thread_name_prefix="soak") as pool:
        next_report = start + 10
        for i in range(total):
            due = start + i / args.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            try:
                backlog.put_nowait(None)
            except queue.Full:
                results.skipped += 1
                continue
            pool.submit(task)
            if time.monotonic() >= next_report:
                next_report += 10
                with results.lock:
                    done, failed = len(results.latencies_ms), sum(results.errors.values())
                rss = f", RSS {samples[-1][1]:.0f} MB" if samples else ""
                print(f"  t={time.monotonic() - start:5.0f}s  done {done}  errors {failed}{rss}",
                      flush=True)
    elapsed = time.monotonic() - start
    stop.set()
    sampler.join(timeout=5)
    if pid is not None and (value := rss_mb(pid)) is not None:
        samples.append((elapsed, value))
    return report(args, results, samples, elapsed)


def report(args: argparse.Namespace, results: Results, samples: list[tuple[float, float]],
           elapsed: float) -> int:
    latencies = results.latencies_ms
    failed = sum(results.errors.values())
    print()
    print(f"requests     {len(latencies)} in {elapsed:.1f} s ({len(latencies) / elapsed:.1f}/s), "
          f"skipped (client saturated) {results.skipped}")
    print("statuses     " + ", ".join(f"{k}: {v}" for k, v in sorted(results.statuses.items())))
    print(f"errors       {failed}" + ("" if not failed else "  " + ", ".join(
        f"{k}: {v}" for k, v in results.errors.most_common())))
    for line in results.error_samples:
        print(f"             e.g. {line}")
    steady = [ms for at, ms in zip(results.started_at, latencies, strict=True)
              if at >= args.warmup]
    for label, values in (("latency ms  ", latencies), ("after warm-up", steady)):
        if values:
            print(f"{label} p50 {percentile(values, 50):.1f}  p95 {percentile(values, 95):.1f}"
                  f"  p99 {percentile(values, 99):.1f}  max {max(values):.1f}"
                  f"  mean {statistics.fmean(values):.1f}  (n={len(values)})")
    grew = 0.0
    after = [(t, v) for t, v in samples if t >= args.warmup]
    if len(after) >= 2:
        first, last = after[0][1], after[-1][1]
        grew = last - first
        quarter = max(1, len(after) // 4)
        early = statistics.fmean(v for _, v in after[:quarter])
        late = statistics.fmean(v for _, v in after[-quarter:])
        print(f"memory RSS   {first:.1f} MB after {args.warmup:g} s warm-up -> {last:.1f} MB at end"
              f" (growth {grew:+.1f} MB, {100 * grew / first:+.1f}%); peak "
              f"{max(v for _, v in after):.1f} MB; trend first->last quarter "
              f"{early:.1f} -> {late:.1f} MB")
    else:
        print("memory RSS   not measured (no server pid, or the run was shorter than the warm-up)")
    bad_memory = args.max_growth_mb is not None and grew > args.max_growth_mb
    if bad_memory:
        print(f"memory grew more than --max-growth-mb {args.max_growth_mb:g}")
    return 1 if failed or bad_memory else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="service base URL")
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight at most")
    parser.add_argument("--timeout", type=float, default=30.0, help="per-request timeout (s)")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before memory baseline")
    parser.add_argument("--pid", type=int, help="server pid (default: found by port)")
    parser.add_argument("--max-growth-mb", type=float, help="fail when RSS grows more than this")
    parser.add_argument("--seed", type=int, default=1, help="request mix seed")
    parser.add_argument("--sign-key", help="PEM private key to mint JWTs (CDS_AUTH=required)")
    parser.add_argument("--iss", default="https://local-ehr.test", help="JWT iss")
    parser.add_argument("--kid", default="local-1", help="JWT kid")
    parser.add_argument("--public-base-url", help="CDS_PUBLIC_BASE_URL of the service (aud)")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0 or args.concurrency <= 0:
        parser.error("rate, duration and concurrency must be positive")
    if args.rate * args.duration > 10_000_000:
        parser.error("more than 10 million requests: lower --rate or --duration")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
