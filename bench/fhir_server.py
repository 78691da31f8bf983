"""A loopback FHIR server for the fallback benchmark: every query waits ``--delay-ms`` first.

It serves one synthetic chart (``charts.fhir_store``): ``GET /fhir/Patient/<id>`` and type searches
``GET /fhir/<Type>?patient=...`` answer with the whole searchset in one page (search parameters
other than the type are not interpreted). Prints ``{"port": N, "base": URL}`` once listening, like
``tests/integration/fhir_server/server.mjs``. Binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from charts import PATIENT_ID, fhir_store

KEY_BY_TYPE = {
    "Condition": "conditions", "Observation": "observations",
    "ServiceRequest": "serviceRequests", "DeviceRequest": "deviceRequests",
    "Procedure": "procedures", "DiagnosticReport": "diagnosticReports",
    "ImagingStudy": "imagingStudies", "MedicationRequest": "medicationRequests",
}


def build_responses(size: str, now: datetime) -> dict[str, bytes]:
    store = fhir_store(size, now)
    out = {f"Patient/{PATIENT_ID}": orjson.dumps(store["patient"])}
    for resource_type, key in KEY_BY_TYPE.items():
        out[resource_type] = orjson.dumps(store[key])
    return out


def make_handler(responses: dict[str, bytes], delay: float) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body leave in one write with Nagle off: no delayed-ACK stall (~40 ms)
        # inflating every query and so the "slowest query" the service is compared with.
        disable_nagle_algorithm = True
        wbufsize = 1 << 20

        def do_GET(self) -> None:
            time.sleep(delay)
            path = urlsplit(self.path).path.removeprefix("/fhir/").strip("/")
            body = responses.get(path)
            status = 200
            if body is None:
                status, body = 404, orjson.dumps({
                    "resourceType": "OperationOutcome",
                    "issue": [{"severity": "error", "code": "not-found"}]})
            self.send_response(status)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    return Handler


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay-ms", type=float, default=200)
    parser.add_argument("--size", default="S")
    parser.add_argument("--now", help="ISO date-time the chart is relative to (default: now)")
    args = parser.parse_args()
    now = datetime.fromisoformat(args.now) if args.now else datetime.now(UTC)
    handler = make_handler(build_responses(args.size, now), args.delay_ms / 1000)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler)
    server.daemon_threads = True
    port = server.server_address[1]
    base = f"http://127.0.0.1:{port}/fhir"
    print(orjson.dumps({"port": port, "base": base}).decode(), flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
