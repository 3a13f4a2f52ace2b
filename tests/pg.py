"""A throw-away PostgreSQL server on 127.0.0.1 for the gradebook tests.

``postgres_server()`` runs Debian's PostgreSQL binaries (package ``postgresql``, found under
``/usr/lib/postgresql/<version>/bin`` or by ``pg_config --bindir``): ``initdb`` into a fresh
folder with trust authentication, ``pg_ctl start`` listening on 127.0.0.1 only, on a free port,
with its socket in that folder; it yields a ``Server`` and stops the server (``pg_ctl stop -m
immediate``) and removes the folder afterwards. PostgreSQL refuses to run as root, so as root
the server runs as the ``postgres`` OS user (else ``nobody``) through ``runuser``.
``binaries()`` is None where PostgreSQL is not installed (the only reason to skip).
"""
from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

MISSING = "PostgreSQL server binaries not found (install the Debian package 'postgresql')"


def binaries() -> Path | None:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``, or None."""
    def version(folder: str) -> list[int]:
        return [int(x) for x in Path(folder).parent.name.split(".") if x.isdigit()]

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version)
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        candidates.append(out.stdout.strip())
    for folder in reversed(candidates):
        if folder and all((Path(folder) / b).exists() for b in ("initdb", "pg_ctl", "postgres")):
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Server:
    port: int
    user: str = "postgres"

    def url(self, database: str) -> str:
        """SQLAlchemy URL of ``database`` on this server (psycopg2 driver)."""
        return f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """``CREATE DATABASE name``; return its URL."""
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user,
                                dbname="postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return self.url(name)


@contextlib.contextmanager
def postgres_server():
    """Start a private PostgreSQL server on 127.0.0.1; yield a ``Server``; stop it."""
    bindir = binaries()
    if bindir is None:
        raise RuntimeError(MISSING)
    base = Path(tempfile.mkdtemp(prefix="attnkit-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:  # postgres will not run as root
        name = next(n for n in ("postgres", "nobody") if _user_exists(n))
        account = pwd.getpwnam(name)
        os.chown(base, account.pw_uid, account.pw_gid)
        prefix = ["runuser", "-u", name, "--"]
    data, port = base / "data", _free_port()

    def run(*cmd: str) -> None:
        proc = subprocess.run(prefix + list(cmd), capture_output=True, text=True, timeout=120,
                              cwd=base)
        if proc.returncode:
            log = (base / "server.log").read_text() if (base / "server.log").exists() else ""
            raise RuntimeError(f"{Path(cmd[0]).name} failed ({proc.returncode}): "
                               f"{proc.stdout[-1500:]}{proc.stderr[-1500:]}{log[-1500:]}")

    started = False
    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
            "-E", "UTF8", "--no-sync")
        options = (f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c fsync=off "
                   "-c full_page_writes=off")
        run(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(base / "server.log"),
            "-w", "-t", "60", "start")
        started = True
        yield Server(port)
    finally:
        if started:
            with contextlib.suppress(Exception):
                run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False
