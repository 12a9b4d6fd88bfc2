"""Under CI=true (set by .ci/run) the shipping tests fail when sshd is missing; elsewhere they skip."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("ci, outcome", [("true", "1 error"), ("", "1 skipped")])
def test_a_missing_sshd_fails_the_ssh_tests_in_ci(ci, outcome):
    env = {**os.environ, "CI": ci, "EDGEKD_TEST_SSHD": "/nonexistent/sshd"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/fleet/test_ship.py",
            "-k",
            "unknown_host",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert outcome in proc.stdout, proc.stdout[-2000:]
    assert (proc.returncode != 0) == bool(ci)


def test_ci_run_sets_ci():
    assert 'export CI="${CI:-true}"' in (REPO / ".ci" / "run").read_text()
