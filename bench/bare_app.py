"""The floor for the HTTP benchmark: ``/decode/...``, a bare Flask endpoint that reads the request
body, decodes it with ``orjson.loads`` and returns a fixed card list, served by gunicorn with the
service's own worker class and settings. ``/cds-services/...`` only reads the body: a reference
point for what decoding costs.

Run: ``gunicorn -w 2 -k gthread --threads 4 ... --chdir bench bare_app:app``. The cards come from
the JSON file named by ``BENCH_CARDS_FILE`` (the benchmark writes the cards the real service
returned), else a one-card placeholder.
"""

from __future__ import annotations

import os
from pathlib import Path

import orjson
from flask import Flask, Response, request

from cds_service.runtime import tune_gc

_CARDS_FILE = os.environ.get("BENCH_CARDS_FILE")
CARDS = (
    Path(_CARDS_FILE).read_bytes()
    if _CARDS_FILE
    else orjson.dumps({"cards": [{"uuid": "00000000-0000-4000-8000-000000000000",
                                  "summary": "Fixed card", "indicator": "info",
                                  "source": {"label": "bench"}}]})
)

app = Flask(__name__)
tune_gc()  # the service's garbage-collector settings, so that the decode reference is fair


@app.post("/cds-services/<service_id>")
def call_service(service_id: str) -> Response:
    request.get_data(cache=False)  # read the body only: a reference, not the floor
    return Response(CARDS, status=200, mimetype="application/json")


@app.post("/decode/cds-services/<service_id>")
def decode_only(service_id: str) -> Response:
    """The floor: the bare endpoint plus orjson.loads of the body."""
    orjson.loads(request.get_data(cache=False))
    return Response(CARDS, status=200, mimetype="application/json")


@app.get("/healthz")
def healthz() -> Response:
    return Response(b'{"status":"ok"}', status=200, mimetype="application/json")
