"""A real PostgreSQL server on a free loopback port, for the PostgreSQL runs of the tests.

``initdb`` makes a throw-away cluster in a temporary folder (its unix socket lives there
too), ``postgres`` serves it until :meth:`PostgresServer.stop`, and the folder is removed.
The cluster trusts local connections and, unless told otherwise (``PostgresServer(fsync=
"on")``), runs without ``fsync``: it is for tests and benchmarks, and is gone when they end.
PostgreSQL refuses to run as root: when the tests run as root (CI does) the cluster belongs to
the ``postgres`` system user that the Debian package creates, and the server runs as that
user.

The binaries come from ``PATH`` or the Debian layout (``/usr/lib/postgresql/<version>/bin``,
newest version first). Each test gets a database of its own (:meth:`take_database`), which
is cheap: one ``CREATE DATABASE`` on a running server, made ahead in the background.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg

from tests.support.redis_server import free_port

INSTALL_HINT = (
    "PostgreSQL is not installed: the PostgreSQL runs of the storage, migration and limits "
    "tests start a real server. Install it with `apt-get install -y postgresql` (Debian "
    "package; .ci/run does so when it is missing)."
)
SERVER_USER = "postgres"


def find_binaries() -> Path | None:
    """The folder holding ``initdb`` and ``postgres`` (None: PostgreSQL is not installed)."""
    on_path = shutil.which("initdb")
    if on_path is not None and shutil.which("postgres") is not None:
        return Path(on_path).resolve().parent
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "postgres").is_file():
            return folder
    return None


class PostgresServer:
    """A throw-away PostgreSQL cluster: :meth:`start`, :meth:`create_database`, :meth:`stop`."""

    def __init__(self, **settings: str) -> None:
        """``settings``: server settings (``fsync="on"``) over the test defaults."""
        bindir = find_binaries()
        if bindir is None:
            raise RuntimeError(INSTALL_HINT)
        self.bindir = bindir
        self.port = free_port()
        self.folder: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._names = itertools.count(1)
        self.settings = settings
        # The next copy of each template, made in the background while a test runs.
        self._spares: dict[str, Future[str]] = {}
        self._spares_lock = threading.Lock()
        self._maker: ThreadPoolExecutor | None = None
        self._run_as: dict[str, Any] = {}
        if os.geteuid() == 0:
            try:
                entry = pwd.getpwnam(SERVER_USER)
            except KeyError:
                raise RuntimeError(
                    f"running as root, but there is no {SERVER_USER!r} user to run PostgreSQL "
                    f"as (PostgreSQL refuses root). {INSTALL_HINT}"
                ) from None
            self._owner = (entry.pw_uid, entry.pw_gid)
            self._run_as = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        else:
            self._owner = (os.geteuid(), os.getegid())

    @property
    def socket_dir(self) -> Path:
        assert self.folder is not None, "not started"
        return self.folder / "run"

    @property
    def log_path(self) -> Path:
        assert self.folder is not None, "not started"
        return self.folder / "postgres.log"

    def url(self, database: str = "postgres", *, password: str | None = None) -> str:
        """A SQLAlchemy URL (psycopg 3) for ``database`` over TCP on the loopback."""
        auth = SERVER_USER if password is None else f"{SERVER_USER}:{password}"
        return f"postgresql+psycopg://{auth}@127.0.0.1:{self.port}/{database}"

    def _conninfo(self, database: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user={SERVER_USER} dbname={database}"

    def _binary(self, name: str) -> str:
        return str(self.bindir / name)

    def start(self) -> None:
        # Not under pytest's tmp_path: that is private to root (0700), which the server's
        # user could not enter. mkdtemp's folder is 0700 too, and handed to that user.
        self.folder = Path(tempfile.mkdtemp(prefix="animagine-pg-"))
        data = self.folder / "data"
        for path in (self.folder, data, self.socket_dir):
            path.mkdir(exist_ok=True)
            os.chown(path, *self._owner)
        common = {"cwd": self.folder, "env": {**os.environ, "LC_ALL": "C"}, **self._run_as}
        argv = [self._binary("initdb"), "-D", str(data), "-U", SERVER_USER, "--auth=trust"]
        argv += ["-E", "UTF8", "--no-locale", "--no-sync"]
        done = subprocess.run(argv, capture_output=True, text=True, check=False, **common)
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}): {done.stderr.strip()}")
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.socket_dir),
            "max_connections": "200",  # 8 processes x (pool of 8 + overflow) at once
            "fsync": "off",  # a test cluster: losing it in a crash loses nothing
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "32MB",
            **self.settings,
        }
        options = [part for key, value in settings.items() for part in ("-c", f"{key}={value}")]
        # The server's log goes to a file: a pipe nobody reads would stall it once full.
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [self._binary("postgres"), "-D", str(data), *options],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                **common,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                error = self.log_path.read_text(errors="replace").strip()
                self.process = None
                self.stop()
                raise RuntimeError(f"postgres exited at start: {error[-2000:]}")
            try:
                with psycopg.connect(self._conninfo(), connect_timeout=1):
                    return
            except psycopg.OperationalError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("postgres did not accept connections within 30 s")

    def execute(self, sql: str, database: str = "postgres") -> list[tuple[Any, ...]]:
        """Run one statement outside a transaction (``CREATE DATABASE`` needs that)."""
        with psycopg.connect(self._conninfo(database), autocommit=True) as conn:
            cursor = conn.execute(sql.encode())
            return list(cursor.fetchall()) if cursor.description else []

    def create_database(self, prefix: str = "test", *, template: str = "template0") -> str:
        """A new database, a copy of ``template`` (by default empty); returns its name.

        Copying a database already migrated (no one may be connected to it meanwhile) is as
        fast as creating an empty one, and much faster than migrating each copy.
        """
        name = f"{prefix}_{next(self._names)}"
        self.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return name

    def take_database(self, template: str = "template0") -> str:
        """Like :meth:`create_database`, but the copy was made ahead, in the background
        while the previous test ran (on a machine with a spare core, a test waits for none)."""
        with self._spares_lock:
            if self._maker is None:
                self._maker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pg-spare")
            ready = self._spares.get(template)
            self._spares[template] = self._maker.submit(self.create_database, template=template)
        return ready.result() if ready is not None else self.create_database(template=template)

    def drop_database(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def version(self) -> str:
        """``15.14``: the running server's version."""
        return str(self.execute("SHOW server_version")[0][0]).split()[0]

    def stop(self) -> None:
        if self._maker is not None:
            self._maker.shutdown(wait=True, cancel_futures=True)
            self._maker = None
            self._spares.clear()
        if self.process is not None:
            self.process.send_signal(signal.SIGINT)  # "fast" shutdown: disconnect everyone
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
            self.process = None
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
