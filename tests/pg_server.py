"""A throwaway PostgreSQL server for tests and benchmarks, started from the installed binaries.

PostgreSQL refuses to run as root, and CI runs as root: when this process is root the server is
initialized and run as an unprivileged OS user (``streamprov-pg``, created with ``useradd`` when
missing, else ``nobody``) through ``runuser``. Its data directory lives in a fresh temporary
directory owned by that user; it listens on 127.0.0.1 on a free port with trust authentication,
tuned for throwaway data (no fsync).

Use ``start_server()`` directly (benchmarks) or the session fixture ``postgres_server`` (tests:
import it into a ``conftest.py``). Without PostgreSQL binaries the fixture skips, saying how to
enable the tests; under CI (``CI`` set) it fails instead. ``STREAMPROV_TEST_PG_URL`` points the
fixture at an existing server instead of starting one (tests that restart the server then skip).
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PG_USER = "streamprov-pg"
"""The OS user that runs the server when this process is root."""

ENABLE_HINT = (
    "install PostgreSQL to run them (Debian: apt-get install -y postgresql; "
    "or set STREAMPROV_PG_BINDIR to a directory with initdb, pg_ctl and postgres, "
    "or STREAMPROV_TEST_PG_URL to an existing server)"
)

DEFAULT_SETTINGS: dict[str, str] = {
    "fsync": "off",
    "synchronous_commit": "on",  # fsync is off, but a crash test must not lose acked commits
    "full_page_writes": "off",
    "max_connections": "200",
    "max_locks_per_transaction": "1024",
    "shared_buffers": "256MB",
    "max_wal_size": "4GB",
    "checkpoint_timeout": "30min",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "dynamic_shared_memory_type": "mmap",
    "log_min_messages": "warning",
    "log_min_error_statement": "panic",
}


class PgUnavailable(Exception):
    """No PostgreSQL server could be started here; the message says why."""


def find_bindir() -> Path | None:
    """The newest PostgreSQL ``bin`` directory with ``initdb`` and ``pg_ctl``, if any."""
    env = os.environ.get("STREAMPROV_PG_BINDIR")
    candidates = [env] if env else []
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
        reverse=True,
    )
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    for cand in candidates:
        path = Path(cand)
        if (path / "initdb").is_file() and (path / "pg_ctl").is_file():
            return path
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _service_user() -> str | None:
    """``None`` when not root; else an unprivileged user to run the server as."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(PG_USER)
        return PG_USER
    except KeyError:
        pass
    useradd = shutil.which("useradd")
    if useradd:
        subprocess.run(
            [useradd, "--system", "--user-group", "--no-create-home",
             "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", PG_USER],
            capture_output=True, check=False,
        )
        with contextlib.suppress(KeyError):
            pwd.getpwnam(PG_USER)  # created now, or by a concurrent session
            return PG_USER
    return "nobody"


@dataclass
class PgServer:
    """A running throwaway server; ``stop()``/``start()``/``restart()`` control it."""

    bindir: Path
    root: Path
    port: int
    os_user: str | None
    log_path: Path = field(init=False)
    running: bool = False

    def __post_init__(self) -> None:
        self.log_path = self.root / "server.log"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, **params: str) -> str:
        """The server's URL with streamprov query parameters (``schema=...``, ...)."""
        if not params:
            return self.dsn
        return self.dsn + "?" + "&".join(f"{k}={v}" for k, v in params.items())

    def _run(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.os_user is not None:
            runuser = shutil.which("runuser")
            if runuser is None:
                raise PgUnavailable("running as root, but runuser is missing to drop privileges")
            cmd = [runuser, "-u", self.os_user, "--", *cmd]
        proc = subprocess.run(
            cmd, cwd=self.root, capture_output=True, text=True, check=False, timeout=timeout
        )
        if check and proc.returncode != 0:
            tail = ""
            if self.log_path.exists():
                tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-15:])
            raise PgUnavailable(
                f"{' '.join(args[:2])} failed ({proc.returncode}): "
                f"{(proc.stderr or proc.stdout).strip()}\n{tail}".strip()
            )
        return proc.stdout

    def init(self, settings: dict[str, str]) -> None:
        self._run(
            "initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth=trust",
            "--encoding=UTF8", "--locale=C", "--no-sync",
        )
        conf = dict(DEFAULT_SETTINGS, **settings)
        conf.update(
            port=str(self.port), listen_addresses="'127.0.0.1'",
            unix_socket_directories=f"'{self.root}'",
        )
        lines = [f"{k} = {v}" for k, v in conf.items()]
        with open(self.data_dir / "postgresql.conf", "a", encoding="utf-8") as fh:
            fh.write("\n# streamprov test server\n" + "\n".join(lines) + "\n")

    def start(self) -> None:
        self._run(
            "pg_ctl", "start", "-D", str(self.data_dir), "-l", str(self.log_path), "-w",
            "-t", "60",
        )
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; ``mode="immediate"`` is a crash (no shutdown checkpoint)."""
        if self.running:
            self._run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "60")
            self.running = False

    def restart(self, mode: str = "fast", down_s: float = 0.0) -> None:
        self.stop(mode)
        if down_s > 0:
            time.sleep(down_s)
        self.start()

    def cleanup(self) -> None:
        with contextlib.suppress(PgUnavailable, subprocess.SubprocessError, OSError):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def start_server(settings: dict[str, str] | None = None) -> PgServer:
    """Initialize and start a throwaway server; raises ``PgUnavailable`` saying why not."""
    bindir = find_bindir()
    if bindir is None:
        raise PgUnavailable(f"PostgreSQL binaries not found; {ENABLE_HINT}")
    user = _service_user()
    root = Path(tempfile.mkdtemp(prefix="streamprov-pg-"))
    if user is not None:
        info = pwd.getpwnam(user)
        os.chown(root, info.pw_uid, info.pw_gid)
    os.chmod(root, 0o700)
    server = PgServer(bindir, root, _free_port(), user)
    try:
        server.init(settings or {})
        server.start()
    except BaseException:
        server.cleanup()
        raise
    atexit.register(server.cleanup)  # a crashed test run leaves no server behind
    return server


@dataclass
class ExternalServer:
    """A server given by ``STREAMPROV_TEST_PG_URL``: used as is, never restarted."""

    dsn: str

    def url(self, **params: str) -> str:
        if not params:
            return self.dsn
        sep = "&" if "?" in self.dsn else "?"
        return self.dsn + sep + "&".join(f"{k}={v}" for k, v in params.items())


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PgServer | ExternalServer]:
    """A PostgreSQL server for the whole test session (see the module docstring)."""
    external = os.environ.get("STREAMPROV_TEST_PG_URL")
    if external:
        yield ExternalServer(external)
        return
    try:
        server = start_server()
    except PgUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs PostgreSQL for these tests: {exc}", pytrace=False)
        pytest.skip(f"PostgreSQL tests skipped: {exc}")
    try:
        yield server
    finally:
        server.cleanup()
