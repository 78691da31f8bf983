"""A throwaway PostgreSQL cluster for tests: Debian's initdb/pg_ctl, a temporary directory, and
a unix socket only (no TCP port, so parallel test runs never collide).

PostgreSQL refuses to run as root, so when the tests run as root the cluster belongs to the
``postgres`` system user (created by Debian's package) and its commands run through ``runuser``.
``bash scripts/setup-test-env.sh`` installs the package; a missing server is a failure naming it.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

SETUP_HINT = "run `make test` (or `bash scripts/setup-test-env.sh`) to install Debian's postgresql"


def _bin_dir() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda p: int(Path(p).parent.parent.name))
    assert candidates, f"no PostgreSQL server under /usr/lib/postgresql: {SETUP_HINT}"
    return Path(candidates[-1]).parent


class PostgresCluster:
    """``start()`` initialises and starts the cluster; ``url(name)`` is a SQLAlchemy URL."""

    def __init__(self) -> None:
        self.bin = _bin_dir()
        # Not under pytest's tmp_path: its parents are private to root, the server runs as postgres.
        self.root = Path(tempfile.mkdtemp(prefix="cds-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root
        self.log_file = self.root / "server.log"
        self._as_postgres = os.geteuid() == 0
        self._migrated_template = ""
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)

    def _run(self, *args: str) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            log = self.log_file.read_text() if self.log_file.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed: {result.stderr}\n{log[-2000:]}")

    def start(self) -> PostgresCluster:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "-E", "UTF8", "--no-sync", "--locale=C")
        options = " ".join([
            "-c listen_addresses=''",  # unix socket only
            f"-c unix_socket_directories={self.socket_dir}",
            "-c max_connections=300",
            # a test cluster: durability against power loss is not what is tested
            "-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off",
        ])
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log_file), "-o", options,
                  "-w", "-t", "60", "start")
        return self

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@/{database}?host={self.socket_dir}"

    def admin_execute(self, sql: str) -> None:
        """Run one statement outside a transaction (CREATE DATABASE cannot run inside one)."""
        import psycopg

        with psycopg.connect(host=str(self.socket_dir), user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def new_database(self, template: str = "template1") -> str:
        name = f"cds_{uuid.uuid4().hex[:12]}"
        self.admin_execute(f"CREATE DATABASE {name} TEMPLATE {template} STRATEGY FILE_COPY")
        return self.url(name)

    def migrated_database(self) -> str:
        """A new database with the service's schema: a copy of one migrated once (copying a
        template is much cheaper than running the migrations for every test)."""
        if not self._migrated_template:
            from cds_service.storage.db import Database

            template = self.new_database()
            database = Database(template)
            database.migrate()
            database.dispose()  # a template must have no open connections
            self._migrated_template = template.split("?")[0].rsplit("/", 1)[-1]
        return self.new_database(self._migrated_template)
