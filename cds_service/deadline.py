"""A time budget for the work done on one request after its data is in hand.

The cost of a request grows with its text: a chart of unique, long free texts (or a text crafted
to be slow) could keep a worker busy past gunicorn's timeout, which kills the worker and leaves
the EHR without any answer. The pipeline opens a budget around the work; the hot loops (resource
by resource, text by text) call ``check`` and the request ends with ``BudgetExceeded``, which the
HTTP layer answers with a JSON 413. Outside a budget (CLI, tests) ``check`` does nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_deadline: ContextVar[float | None] = ContextVar("cds_deadline", default=None)


class BudgetExceeded(Exception):
    """The request needs more work than its time budget allows."""


@contextmanager
def budget(seconds: float | None) -> Iterator[None]:
    token = _deadline.set(time.monotonic() + seconds if seconds else None)
    try:
        yield
    finally:
        _deadline.reset(token)


def check() -> None:
    deadline = _deadline.get()
    if deadline is not None and time.monotonic() > deadline:
        raise BudgetExceeded
