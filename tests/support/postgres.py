"""A throwaway PostgreSQL server for tests and benchmarks (Debian's ``postgresql`` package).

``TempPostgres().start()`` runs ``initdb`` and ``pg_ctl`` from ``/usr/lib/postgresql/*/bin`` (or
``$PATH``) into a temporary folder, listening on a free port on 127.0.0.1 with its unix socket
in that folder too, trust authentication, user ``postgres``. As root the server runs as the
``postgres`` system user (PostgreSQL refuses to run as root). ``stop()`` shuts it down and
removes the folder. Nothing here touches a system-wide cluster.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server binaries (or a user to run them as) are missing."""


def find_bin_dir() -> Path:
    """The folder holding ``initdb`` and ``pg_ctl`` (the newest Debian version wins)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise PostgresUnavailable(
        "PostgreSQL server binaries not found (initdb/pg_ctl); install them with `apt-get install -y postgresql`."
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TempPostgres:
    """A private PostgreSQL server in a temporary folder.

    ``durable=False`` (tests) turns off fsync and synchronous commit for speed; the benchmark
    keeps PostgreSQL's defaults (every commit flushed to disk), like SQLite's ``synchronous=FULL``."""

    def __init__(self, *, durable: bool = False, max_connections: int = 100):
        self.durable = durable
        self.max_connections = max_connections
        self.bin_dir = find_bin_dir()
        self.root: Path | None = None
        self.port: int | None = None
        self._as: list[str] = []

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> TempPostgres:
        self.root = Path(tempfile.mkdtemp(prefix="rlhf-pg-"))
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable(
                    "running as root but there is no 'postgres' user to run the server as"
                ) from None
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        data = self.root / "data"
        self._run(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )
        self.port = _free_port()
        opts = [
            f"-p {self.port}",
            f"-k {self.root}",
            "-c listen_addresses=127.0.0.1",
            f"-c max_connections={self.max_connections}",
        ]
        if not self.durable:
            opts += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._run(
            [
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(self.root / "server.log"),
                "-w",
                "-t",
                "60",
                "-o",
                " ".join(opts),
                "start",
            ]
        )
        return self

    def stop(self) -> None:
        if self.root is None:
            return
        try:
            self._run([str(self.bin_dir / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop"])
        except PostgresUnavailable:
            pass
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def __enter__(self) -> TempPostgres:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- databases ------------------------------------------------------------------------------
    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database; returns its SQLAlchemy URL."""
        import psycopg

        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def empty_database(self, name: str = "rlhf_test") -> str:
        """A database with nothing in it (created on first use, its schema dropped and recreated
        afterwards; much cheaper on disk than a new database per test); returns its URL."""
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if exists:
                # end sessions a test left open (engines not disposed), so the drop cannot block
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    (name,),
                )
        if not exists:
            return self.create_database(name)
        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=name, autocommit=True) as conn:
            conn.execute("DROP SCHEMA public CASCADE")
            conn.execute("CREATE SCHEMA public")
        return self.url(name)

    # -------------------------------------------------------------------------------------------
    def _run(self, cmd: list[str]) -> None:
        res = subprocess.run(self._as + cmd, capture_output=True, text=True, cwd=self.root)
        if res.returncode != 0:
            log = ""
            if self.root is not None and (self.root / "server.log").exists():
                log = (self.root / "server.log").read_text()[-2000:]
            raise PostgresUnavailable(
                f"{' '.join(cmd[:2])} failed ({res.returncode}): {res.stderr.strip() or res.stdout.strip()} {log}"
            )
