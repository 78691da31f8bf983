"""Command line: ``python -m cds_service <command>``.

serve   run the service under gunicorn (Flask's development server only with --debug)
migrate bring the database schema to the newest revision, then exit
purge   delete expired JWT ids and rows past CDS_RETENTION_DAYS once, then exit
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from collections.abc import Sequence
from typing import Any

from cds_service.commands import COMMANDS, command
from cds_service.config import Settings, SettingsError


def is_loopback(host: str) -> bool:
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind_allowed(settings: Settings, host: str) -> None:
    """Without JWT checks the service trusts anyone, so it listens only on loopback unless the
    operator said CDS_AUTH=off explicitly."""
    if settings.auth == "off" and not settings.auth_explicit and not is_loopback(host):
        raise SettingsError(
            f"refusing to listen on {host} without JWT verification: set CDS_AUTH=required "
            "(and CDS_TRUSTED_ISSUERS_FILE), or CDS_AUTH=off explicitly to accept any caller"
        )


def serve(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    check_bind_allowed(settings, args.host)
    from cds_service.storage.db import Database

    # once, before workers start (under a database lock: instances may start together); then
    # closed, so no forked worker inherits a connection of the master's
    database = Database(settings.database_url)
    database.migrate()
    database.dispose()
    if args.debug:
        from cds_service import create_app

        create_app(migrate=False).run(host=args.host, port=args.port, debug=True)
        return 0
    from gunicorn.app.base import BaseApplication

    class GunicornApp(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", f"{args.host}:{args.port}")
            self.cfg.set("workers", args.workers)
            self.cfg.set("threads", args.threads)
            # gunicorn's own workers, answering malformed HTTP in JSON without logging what was sent
            workers = "cds_service.http.workers.JsonErrors"
            self.cfg.set("worker_class", f"{workers}ThreadWorker" if args.threads > 1
                         else f"{workers}SyncWorker")
            self.cfg.set("timeout", 30)
            # SIGTERM: stop accepting, let in-flight calls finish for up to this long
            self.cfg.set("graceful_timeout", settings.graceful_timeout_seconds)
            # gunicorn's control socket defaults to one path per user ($HOME/.gunicorn): a
            # second instance on the host would take it over and stopping either deletes it.
            # None unless configured, then at the path given (one per instance).
            if settings.control_socket:
                self.cfg.set("control_socket", settings.control_socket)
            else:
                self.cfg.set("control_socket_disable", True)
            self.cfg.set("keepalive", 5)
            self.cfg.set("accesslog", None)  # our own JSON request log replaces it
            self.cfg.set("errorlog", "-")
            self.cfg.set("limit_request_line", 8190)

        def load(self) -> Any:
            from cds_service import create_app

            return create_app(migrate=False)

    GunicornApp().run()
    return 0


def _configure_serve(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=os.environ.get("CDS_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("CDS_PORT", "8080")))
    parser.add_argument("--workers", type=int, default=int(os.environ.get("CDS_WORKERS", "2")))
    parser.add_argument("--threads", type=int, default=int(os.environ.get("CDS_THREADS", "4")))
    parser.add_argument("--debug", action="store_true", help="Flask development server")


serve.configure = _configure_serve  # type: ignore[attr-defined]
command("serve", "run the service under gunicorn")(serve)


def migrate(_args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    from cds_service.storage.db import Database

    database = Database(settings.database_url)
    database.migrate()
    database.dispose()
    print("database schema is at the newest revision")
    return 0


command("migrate", "migrate the database schema (safe to run from several instances)")(migrate)


def purge(_args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    from datetime import UTC, datetime, timedelta

    from cds_service.storage.db import Database

    database = Database(settings.database_url)
    deleted = database.purge(datetime.now(UTC), timedelta(days=settings.retention_days))
    database.dispose()
    print(", ".join(f"{table}: {count} deleted" for table, count in deleted.items()))
    return 0


command("purge", "delete expired JWT ids and rows past CDS_RETENTION_DAYS, once")(purge)


def build_parser(*, exit_on_error: bool = True) -> argparse.ArgumentParser:
    _load_cli_modules()
    parser = argparse.ArgumentParser(prog="python -m cds_service", exit_on_error=exit_on_error)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, registered in COMMANDS.items():
        p = sub.add_parser(name, help=registered.help, exit_on_error=exit_on_error)
        registered.configure(p)
        p.set_defaults(handler=registered.handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _load_cli_modules() -> None:
    """Other commands (evaluate, fire, load-fixtures, feedback-report) register from cli.py."""
    import importlib.util

    if importlib.util.find_spec("cds_service.cli") is not None:
        import cds_service.cli  # noqa: F401


if __name__ == "__main__":
    sys.exit(main())
