"""Helpers for the hardening tests: the real CLI as a subprocess, and the real-sshd fixtures of tests/devices."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

_fleet = Path(__file__).parents[1] / "fleet"
if str(_fleet) not in sys.path:  # its conftest imports fleet_helpers, as pytest makes possible for tests/fleet itself
    sys.path.insert(0, str(_fleet))
_spec = importlib.util.spec_from_file_location("_edgekd_devices_conftest", _fleet / "conftest.py")
_devices = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_devices)
sshd = _devices.sshd  # a real OpenSSH server on 127.0.0.1 (skips when not installed)
isolated_python = _devices.isolated_python  # the 'device python': refuses edgekd and torch imports
run_dir_template = _devices.run_dir_template  # a run dir with real ONNX files and bench/val.npz
run_dir = _devices.run_dir


def edgekd(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m edgekd.cli ARGS` as a subprocess."""
    return subprocess.run([sys.executable, "-m", "edgekd.cli", *args], capture_output=True, text=True, timeout=timeout)


def one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """Assert exit 2 and a single `error: ...` line on stderr holding every fragment, with no traceback."""
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert proc.returncode == 2 and len(errors) == 1, (proc.returncode, proc.stderr)
    assert len([ln for ln in proc.stderr.splitlines() if ln.strip()]) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


@pytest.fixture
def cli():
    return edgekd


@pytest.fixture
def expect_error():
    return one_line_error
