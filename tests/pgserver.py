"""A throwaway PostgreSQL server for the tests and the database benchmark.

:class:`PostgresServer` runs Debian's (or any) ``initdb`` and ``pg_ctl`` in a temporary
folder, on a free localhost port, as an unprivileged user (the ``postgres`` system user when
run as root, else the current user), and removes everything on :meth:`stop`.  Two roles:
``rfmx``, the superuser, trusted from localhost (tests connect without credentials), and
``reader``, who must give the password :attr:`PASSWORD` (the credential tests).
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

__all__ = ["PostgresServer", "find_bin", "Unavailable"]

PASSWORD = "s3cret pass:word"


class Unavailable(RuntimeError):
    """No PostgreSQL server can be run here (the reason says why)."""


def find_bin() -> Path | None:
    """The folder with ``initdb`` and ``pg_ctl``: on PATH (unless a Debian wrapper), else the
    newest ``/usr/lib/postgresql/*/bin``."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True)
    found = shutil.which("pg_ctl")
    if found:
        candidates.insert(0, str(Path(os.path.realpath(found)).parent))
    for folder in candidates:
        if os.access(os.path.join(folder, "initdb"), os.X_OK) and os.access(os.path.join(folder, "pg_ctl"), os.X_OK):
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """``with PostgresServer() as server: server.uri()`` — a running server until the block ends."""

    PASSWORD = PASSWORD

    def __init__(self):
        self.bin = find_bin()
        if self.bin is None:
            raise Unavailable("PostgreSQL server binaries (initdb, pg_ctl) not found; install Debian's postgresql")
        self.user = None
        if os.geteuid() == 0:  # the server refuses to run as root
            try:
                self.user = pwd.getpwnam("postgres")
            except KeyError:
                raise Unavailable("running as root and there is no 'postgres' user to run the server as") from None
        self.port = None
        self.folder = None

    def _run(self, *args: str) -> None:
        kwargs = {}
        if self.user is not None:
            kwargs = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        env = {"PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
        result = subprocess.run(args, cwd=self.folder, env=env, capture_output=True, text=True, timeout=120, **kwargs)
        if result.returncode != 0:
            raise Unavailable(f"{' '.join(args[:2])} failed: {(result.stderr or result.stdout).strip()[-500:]}")

    def start(self) -> "PostgresServer":
        self.folder = tempfile.mkdtemp(prefix="rfmx-pg-")
        if self.user is not None:
            os.chown(self.folder, self.user.pw_uid, self.user.pw_gid)
        data = os.path.join(self.folder, "data")
        try:
            self._run(str(self.bin / "initdb"), "-D", data, "-U", "rfmx", "-E", "UTF8", "--no-sync",
                      "--auth-local=trust", "--auth-host=trust")
            with open(os.path.join(data, "pg_hba.conf"), "w") as hba:
                hba.write("local all all trust\n"
                          "host all reader 127.0.0.1/32 scram-sha-256\n"
                          "host all all 127.0.0.1/32 trust\n")
            for attempt in range(5):  # a port found free may be taken before the server binds it
                self.port = _free_port()
                try:
                    self._run(str(self.bin / "pg_ctl"), "-D", data, "-l", os.path.join(self.folder, "server.log"),
                              "-w", "-t", "60", "-o",
                              f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off "
                              f"-c synchronous_commit=off -c full_page_writes=off", "start")
                    break
                except Unavailable:
                    if attempt == 4:
                        raise
            self.sql(f"CREATE ROLE reader LOGIN PASSWORD '{PASSWORD}'", "CREATE DATABASE shop",
                     "GRANT ALL ON SCHEMA public TO reader", database="postgres")
            self.sql("GRANT ALL ON SCHEMA public TO reader",
                     "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO reader")
        except BaseException:
            self.stop()
            raise
        return self

    def uri(self, database: str = "shop", user: str = "rfmx") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def sql(self, *statements: str, database: str = "shop") -> list:
        """Run ``statements`` (autocommit) and return the last one's rows."""
        import adbc_driver_postgresql.dbapi as pg

        rows = []
        with pg.connect(self.uri(database), autocommit=True) as con:
            with con.cursor() as cur:
                for statement in statements:
                    cur.execute(statement)
                    rows = cur.fetchall() if cur.description else []
        return rows

    def load(self, table: str, data, database: str = "shop") -> None:
        """Create ``table`` from an Arrow table or record batches (replacing it)."""
        import adbc_driver_postgresql.dbapi as pg
        import pyarrow as pa

        if not isinstance(data, (pa.Table, pa.RecordBatchReader)):
            batches = list(data)
            data = pa.Table.from_batches(batches)
        with pg.connect(self.uri(database)) as con:
            with con.cursor() as cur:
                cur.adbc_ingest(table, data, mode="replace")
            con.commit()

    def stop(self) -> None:
        if self.folder is None:
            return
        data = os.path.join(self.folder, "data")
        if os.path.exists(os.path.join(data, "postmaster.pid")):
            try:
                self._run(str(self.bin / "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop")
            except Unavailable:
                pass
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder = None

    def __enter__(self) -> "PostgresServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
