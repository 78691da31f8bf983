"""Gunicorn workers that answer malformed HTTP the way the app answers everything else.

Both also stop waiting for a client that goes quiet in the middle of a request (headers never
finished, a body shorter than its Content-Length): gunicorn reads a started request with a
blocking socket and no timeout, so eight such clients held all of a worker's threads for good.
``SO_RCVTIMEO`` bounds each wait at ``CDS_CLIENT_READ_TIMEOUT_SECONDS``, after which the
connection is closed. A client trickling one byte at a time is only bounded by a buffering
proxy in front.

A request gunicorn cannot parse (a bad request line, an oversized or invalid header, broken
chunked encoding) never reaches Flask: gunicorn's stock handler answers it with an HTML page and
logs the parser's message, which quotes the offending request line or header. That message can
hold a bearer token or a patient id, so here the log names only the kind of error, and the client
gets the same JSON OperationOutcome as any other 4xx, with a stable code.
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
from contextlib import suppress
from functools import cache
from typing import Any

import orjson
from gunicorn import util
from gunicorn.http import errors as http_errors
from gunicorn.workers.gthread import ThreadWorker
from gunicorn.workers.sync import SyncWorker

from cds_service.config import Settings
from cds_service.http.errors import operation_outcome
from cds_service.logs import log_event

log = logging.getLogger("cds_service.http")

# (exception, status, reason phrase, error code); the first match wins, so subclasses come first.
# RFC 9112 suggests 501 for an unknown transfer coding; it is answered 400 here because it is the
# client's input that is wrong, and a 5xx would page the service's owners for it.
_CLIENT_ERRORS: tuple[tuple[type[BaseException], int, str, str], ...] = (
    (http_errors.LimitRequestLine, 414, "URI Too Long", "request-line-too-long"),
    (http_errors.LimitRequestHeaders, 431, "Request Header Fields Too Large",
     "headers-too-large"),
    (http_errors.ExpectationFailed, 417, "Expectation Failed", "expectation-failed"),
    (http_errors.ForbiddenProxyRequest, 403, "Forbidden", "forbidden"),
    (http_errors.UnsupportedTransferCoding, 400, "Bad Request", "unsupported-transfer-coding"),
    (http_errors.InvalidChunkSize, 400, "Bad Request", "invalid-chunked-body"),
    (http_errors.ChunkMissingTerminator, 400, "Bad Request", "invalid-chunked-body"),
    (http_errors.InvalidChunkExtension, 400, "Bad Request", "invalid-chunked-body"),
    (ssl.SSLError, 400, "Bad Request", "tls-error"),
)
_MESSAGES = {
    "request-line-too-long": "the request line is longer than the server accepts",
    "headers-too-large": "the request headers are larger than the server accepts",
    "expectation-failed": "the Expect header can not be met",
    "forbidden": "request forbidden",
    "unsupported-transfer-coding": "unsupported Transfer-Encoding (only chunked is accepted)",
    "invalid-chunked-body": "the chunked request body is malformed",
    "tls-error": "TLS handshake failed",
    "malformed-http": "malformed HTTP request",
    "internal-error": "the service failed to process the request",
}


def classify(exc: BaseException) -> tuple[int, str, str]:
    """Status, reason phrase and error code for an exception raised while handling a request."""
    # an invalid header the app tried to send, or a server misconfiguration: not the client's fault
    if isinstance(exc, (http_errors.InvalidResponseHeader, http_errors.InvalidResponseHeaderName,
                        http_errors.ConfigurationProblem)):
        return 500, "Internal Server Error", "internal-error"
    for error_type, status, reason, code in _CLIENT_ERRORS:
        if isinstance(exc, error_type):
            return status, reason, code
    if isinstance(exc, http_errors.ParseException):
        return 400, "Bad Request", "malformed-http"
    return 500, "Internal Server Error", "internal-error"


def error_bytes(status: int, reason: str, code: str) -> bytes:
    body = orjson.dumps(operation_outcome(status, code, _MESSAGES[code]))
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode("latin-1") + body


@cache
def _read_timeout() -> bytes:
    seconds = Settings.from_env().client_read_timeout_seconds
    return struct.pack("ll", int(seconds), int((seconds % 1) * 1_000_000))


def bound_reads(sock: socket.socket) -> None:
    """Make every blocking read on ``sock`` give up after CDS_CLIENT_READ_TIMEOUT_SECONDS of
    silence. An OS option rather than ``settimeout``: gunicorn calls ``setblocking(True)``,
    which would undo it."""
    with suppress(OSError):  # not a TCP/Unix socket (a test double): nothing to bound
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _read_timeout())


class _ClientWentQuiet(logging.Filter):
    """gunicorn logs a read that timed out (SO_RCVTIMEO above) as "Socket error processing
    request." with a full traceback: a few stalled clients would flood the log. Such a record is
    replaced by one JSON line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, (TimeoutError, BlockingIOError)):
            log_event(log, "client went quiet mid-request: connection closed", logging.INFO)
            return False
        return True


class _JsonErrors:
    log: Any

    def init_process(self) -> None:
        logging.getLogger("gunicorn.error").addFilter(_ClientWentQuiet())
        super().init_process()  # type: ignore[misc]

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        status, reason, code = classify(exc)
        if status >= 500:
            log_event(log, "unhandled error outside the app", logging.ERROR, exc_info=True,
                      error=type(exc).__name__)
        else:
            # The exception's text quotes what the client sent (headers, URL): never logged.
            log_event(log, "malformed HTTP request refused", logging.WARNING, status=status,
                      code=code, error=type(exc).__name__)
        try:
            util.write_nonblock(client, error_bytes(status, reason, code))
        except Exception:  # the client may already be gone; nothing is left to tell it
            log_event(log, "could not send the error response", logging.DEBUG)


class JsonErrorsThreadWorker(_JsonErrors, ThreadWorker):
    """gthread worker (``serve --threads N`` with N > 1)."""

    def handle(self, conn: Any) -> Any:
        bound_reads(conn.sock)
        return super().handle(conn)


class JsonErrorsSyncWorker(_JsonErrors, SyncWorker):
    """sync worker (``serve --threads 1``)."""

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        bound_reads(client)
        super().handle(listener, client, addr)
