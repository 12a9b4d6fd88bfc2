"""A real OpenSSH server on 127.0.0.1 (throwaway host and user keys, host key checked), a device config for it,
and a small run directory with real ONNX files and a validation batch."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from fleet_helpers import vouch

from edgekd.config import DeviceBenchConfig, DeviceConfig

SSHD = os.environ.get("EDGEKD_TEST_SSHD", "/usr/sbin/sshd")
REPO = Path(__file__).resolve().parents[2]

ISOLATE = '''\
"""Run like `python -m MOD ...`, `python -c CODE ...` or `python - ...`, with edgekd and torch imports refused: device code must not need them."""
import importlib.abc, runpy, sys

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("edgekd", "torch"):
            raise ImportError("device code imported %s" % name)
        return None

sys.meta_path.insert(0, Refuse())
args = sys.argv[1:]
if args[0] == "-m":
    sys.argv = args[1:]
    runpy.run_module(args[1], run_name="__main__", alter_sys=True)
elif args[0] == "-c":
    sys.argv = ["-c", *args[2:]]
    exec(compile(args[1], "<string>", "exec"), {"__name__": "__main__"})
else:
    sys.argv = args
    exec(compile(sys.stdin.read(), "<stdin>", "exec"), {"__name__": "__main__"})
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


class SshServer:
    """sshd -D on 127.0.0.1:port for the current user; stop()/start() to simulate a dropped device."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = _free_port()
        _keygen(root / "host_key")
        _keygen(root / "user_key")
        shutil.copyfile(root / "user_key.pub", root / "authorized_keys")
        (root / "authorized_keys").chmod(0o600)
        host_pub = (root / "host_key.pub").read_text().split()
        (root / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        (root / "global_known_hosts").write_text("")
        (root / "ssh_config").write_text("")  # isolate the tests from the user's ~/.ssh/config
        (root / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {root / 'host_key'}\nPidFile {root / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {root / 'authorized_keys'}\nPubkeyAuthentication yes\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n"
            "Subsystem sftp internal-sftp\nLogLevel ERROR\n"
        )
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation dir sshd wants when root
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(self.root / "sshd_config")],
            stdout=subprocess.DEVNULL,
            stderr=open(self.root / "sshd.log", "ab"),  # noqa: SIM115 -- the server process owns it
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.root / 'sshd.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("sshd did not start listening")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def device(self, workdir: Path, python: str, backends: list[str], name: str = "loopback") -> DeviceConfig:
        device = DeviceConfig(
            host="127.0.0.1",
            port=self.port,
            user=getpass.getuser(),
            identity_file=self.root / "user_key",
            ssh_config=self.root / "ssh_config",
            ssh_options=[
                f"UserKnownHostsFile={self.root / 'known_hosts'}",
                f"GlobalKnownHostsFile={self.root / 'global_known_hosts'}",  # empty: only the test's key is known
                "StrictHostKeyChecking=yes",
            ],
            kind="test-host",
            workdir=str(workdir),
            python=python,
            backends=backends,
            record_power_mode=False,
            connect_timeout_s=5,
            command_timeout_s=120,
            ort_providers=["CPUExecutionProvider"],
            benchmark=DeviceBenchConfig(batch_sizes=[1, 4], warmup=1, min_runs=3, min_seconds=0.0, repeats=1),
        )
        device.name = name
        return device


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> SshServer:
    if not os.path.exists(SSHD) or shutil.which("scp") is None or shutil.which("ssh-keygen") is None:
        why = f"OpenSSH server not installed ({SSHD}); run .ci/install-sshd"
        if os.environ.get("CI", "").lower() in ("true", "1"):  # in CI the shipping tests are required, never skipped
            pytest.fail(why + " (CI=true: the ssh tests must run)")
        pytest.skip(why)
    for attempt in range(3):  # under pytest-xdist each worker starts its own server, on its own free port
        server = SshServer(tmp_path_factory.mktemp("sshd"))
        try:
            server.start()
            break
        except RuntimeError as e:  # the port was free when picked; another process bound it before sshd did
            if "Address already in use" not in str(e) or attempt == 2:
                raise
    yield server
    server.stop()


@pytest.fixture
def engine_cache_dir(tmp_path, monkeypatch):
    """Engines a ship brings back go to this test's engine cache, not the user's (~/.cache/edgekd)."""
    monkeypatch.setenv("EDGEKD_CACHE_DIR", str(tmp_path / "host-cache"))


@pytest.fixture(scope="session")
def device_venv() -> str:
    """The device-like venv's python: $EDGEKD_DEVICE_PYTHON (set by .ci/run), else .ci/device-venv's default."""
    python = os.environ.get("EDGEKD_DEVICE_PYTHON") or str(REPO / ".ci" / "device-venv.d" / "bin" / "python")
    if not os.access(python, os.X_OK):
        why = f"no device-like venv at {python}; run `sh .ci/device-venv`"
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(why + " (CI=true: this test must run)")
        pytest.skip(why)
    return python


@pytest.fixture(scope="session")
def isolated_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An executable that runs this machine's Python with edgekd and torch imports refused (the 'device python')."""
    folder = tmp_path_factory.mktemp("python")
    (folder / "isolate.py").write_text(ISOLATE)
    wrapper = folder / "python3"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} {folder / "isolate.py"} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def _export(model: torch.nn.Module, path: Path, channels: int, side: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            (torch.randn(2, channels, side, side),),
            str(path),
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
            dynamo=False,
        )


@pytest.fixture(scope="session")
def run_dir_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run dir with export/student.onnx (tiny CNN), export/teacher.onnx (wide MLP, ~15 MB: slow enough to interrupt) and bench/val.npz."""
    root = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    student = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 10),
    )
    teacher = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 48 * 1024), torch.nn.ReLU(), torch.nn.Linear(48 * 1024, 10)
    )
    _export(student, root / "export" / "student.onnx", 1, 8)
    _export(teacher, root / "export" / "teacher.onnx", 1, 8)
    images = np.random.default_rng(0).standard_normal((24, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        teacher_logits = teacher(torch.from_numpy(images)).numpy()
    (root / "bench").mkdir()
    np.savez(
        root / "bench" / "val.npz",
        images=images,
        labels=teacher_logits.argmax(1).astype(np.int64),
        teacher_logits=teacher_logits,
    )
    vouch(root, "export", {"student_onnx": "export/student.onnx", "teacher_onnx": "export/teacher.onnx"})
    vouch(root, "benchmark", {"val_set": "bench/val.npz"})
    return root


@pytest.fixture
def run_dir(run_dir_template: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(run_dir_template, target)
    return target
