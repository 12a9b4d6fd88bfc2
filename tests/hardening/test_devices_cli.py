"""Devices that cannot be reached or lack TensorRT, through the real `edgekd devices check` / `edgekd ship`."""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

import pytest
import yaml

needs_ssh_client = pytest.mark.skipif(
    shutil.which("ssh") is None, reason="OpenSSH client not installed; run .ci/install-sshd"
)


def _devices_file(tmp_path: Path, **device: object) -> Path:
    path = tmp_path / "devices.yaml"
    path.write_text(yaml.safe_dump({"devices": {"xavier": {"kind": "jetson-agx-xavier", **device}}}))
    return path


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


@needs_ssh_client
def test_closed_port_is_a_quick_clear_error(tmp_path, cli, expect_error):
    port = _closed_port()
    path = _devices_file(tmp_path, host="127.0.0.1", port=port, connect_timeout_s=2, ssh_config="/dev/null")
    t0 = time.monotonic()
    proc = cli("devices", "check", "xavier", "--devices", str(path), timeout=60)
    assert time.monotonic() - t0 < 30
    expect_error(proc, f"device 'xavier' (127.0.0.1:{port}): unreachable over SSH", "Connection refused")


@needs_ssh_client
def test_silent_server_times_out_after_connect_timeout(tmp_path, cli, expect_error):
    with socket.socket() as server:  # accepts TCP (the kernel does) but never sends an SSH banner
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        port = server.getsockname()[1]
        path = _devices_file(tmp_path, host="127.0.0.1", port=port, connect_timeout_s=1, ssh_config="/dev/null")
        t0 = time.monotonic()
        proc = cli("devices", "check", "xavier", "--devices", str(path), timeout=60)
        assert time.monotonic() - t0 < 30
    expect_error(proc, f"device 'xavier' (127.0.0.1:{port}): unreachable over SSH", "timed out")


def test_unknown_device_name_suggests_the_nearest(tmp_path, cli, expect_error):
    path = _devices_file(tmp_path, host="127.0.0.1")
    expect_error(
        cli("devices", "check", "xavir", "--devices", str(path)), "no device named 'xavir'; did you mean 'xavier'?"
    )


def _loopback_file(tmp_path: Path, sshd, python: str, backends: list[str]) -> Path:
    device = sshd.device(tmp_path / "remote", python, backends, name="loopback")
    doc = device.model_dump(mode="json", exclude={"name"}, exclude_none=True)
    path = tmp_path / "devices.yaml"
    path.write_text(yaml.safe_dump({"devices": {"loopback": doc}}))
    return path


@pytest.mark.ssh
@pytest.mark.slow
def test_device_without_tensorrt(sshd, isolated_python, run_dir, tmp_path, cli, expect_error):
    path = _loopback_file(tmp_path, sshd, isolated_python, ["tensorrt"])
    check = cli("devices", "check", "loopback", "--devices", str(path))
    assert check.returncode == 2 and "Traceback" not in check.stderr + check.stdout, check.stderr
    problems = [ln for ln in check.stdout.splitlines() if ln.startswith("problem: ")]
    assert (
        problems
        and problems[0].startswith("problem: tensorrt is not importable by")
        and "backend tensorrt needs it" in problems[0]
    )
    assert "libraries: numpy" in check.stdout

    ship = cli("ship", str(run_dir), "--device", "loopback", "--devices", str(path))
    expect_error(ship, "device 'loopback' is not ready: tensorrt is not importable")
    assert not list((tmp_path / "remote").glob("objects/*"))  # stopped before copying anything
