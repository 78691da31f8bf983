"""Child processes the tests start (servers, gunicorn instances): stopping them one way."""

from __future__ import annotations

import subprocess
from collections.abc import Callable


def stop_process(proc: subprocess.Popen, grace: float,
                 force: Callable[[], None] | None = None) -> None:
    """SIGTERM, wait ``grace`` seconds for a clean exit (gunicorn drains its workers), then
    ``force`` (default: SIGKILL of the process itself) and wait for it."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        (force or proc.kill)()
        proc.wait(timeout=10)
