"""A real PostgreSQL server on 127.0.0.1 for the shared-study tests: Debian's binaries (.ci/install-postgres),
a temporary data directory, run as the `postgres` user when the tests run as root (the server refuses root).
Outside CI a missing server skips its tests; under CI=true it fails them."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def _bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    bin_dir = _bin()
    why = None
    if bin_dir is None:
        why = "no PostgreSQL server in /usr/lib/postgresql/*/bin (.ci/install-postgres installs it)"
    else:
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            why = "psycopg2 is not installed (pip install -e '.[test]')"
    if why:
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(why + " (CI=true: the PostgreSQL test must run)")
        pytest.skip(why)
    kwargs: dict = {}
    # a folder of its own under /tmp: pytest's temporary folders are closed to other users than root
    data = Path(tempfile.mkdtemp(prefix="edgekd-pg-")) / "data"
    if os.getuid() == 0:
        user = pwd.getpwnam("postgres")
        kwargs = {"user": user.pw_uid, "group": user.pw_gid}
        os.chown(data.parent, user.pw_uid, user.pw_gid)
    port = _free_port()
    run = lambda *cmd: subprocess.run(cmd, check=True, capture_output=True, text=True, **kwargs)  # noqa: E731
    run(str(bin_dir / "initdb"), "-D", str(data), "-U", "edgekd", "--auth=trust", "-E", "UTF8")
    log = data.parent / "server.log"
    server = subprocess.Popen(
        [str(bin_dir / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port), "-k", str(data.parent)],
        stdout=open(log, "w"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        **kwargs,
    )
    try:
        deadline = time.monotonic() + 60
        while subprocess.run(
            [str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True
        ).returncode:
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"PostgreSQL did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        run(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "edgekd", "sweep")
        yield f"postgresql+psycopg2://edgekd@127.0.0.1:{port}/sweep"
    finally:
        server.send_signal(signal.SIGINT)  # fast shutdown: clients still connected are disconnected
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(data.parent, ignore_errors=True)
