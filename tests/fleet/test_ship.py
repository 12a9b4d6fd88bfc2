"""Shipping to a real sshd on 127.0.0.1 whose 'device python' refuses edgekd and torch imports."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from edgekd.errors import EdgekdError
from edgekd.fleet.check import check_device
from edgekd.fleet.ship import ship
from edgekd.ondevice.measure import BENCH_SCHEMA

pytestmark = [pytest.mark.ssh, pytest.mark.slow]


def _children(name: str) -> list[int]:
    """Pids of this process's direct children whose command is `name`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            argv0 = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")[0].decode()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and os.path.basename(argv0) == name:
            found.append(int(entry))
    return found


def test_ship_onnxruntime_device_then_reship_copies_nothing(sshd, isolated_python, run_dir, tmp_path):
    device = sshd.device(tmp_path / "remote", isolated_python, ["onnxruntime"])
    first = ship(run_dir, device)

    assert first.uploaded_files > 0 and first.ran_bench and first.downloaded
    doc = json.loads((run_dir / "bench" / "loopback.json").read_text())
    assert doc["schema"] == BENCH_SCHEMA
    assert doc["device"] == "loopback" and doc["kind"] == "test-host" and doc["reference"] == "teacher_onnx"
    assert "torch" not in doc["system"]["libraries"]  # the device python could not import it
    by_id = {a["id"]: a for a in doc["artifacts"]}
    assert set(by_id) == {"teacher_onnx", "student_onnx"}
    assert len(doc["artifacts"]) == 2  # one record per catalogue id, the ids the host uses
    for art in by_id.values():
        assert art["status"] == "done", art["reason"]
        assert art["runtime"]["name"] == "onnxruntime" and isinstance(art["runtime"]["threads"], int)
        assert [lat["batch_size"] for lat in art["latency"]] == [1, 4]
        assert art["sha256"] == hashlib.sha256((run_dir / art["path"]).read_bytes()).hexdigest()
    # val labels are the teacher's argmax, so the teacher scores 100 and agrees with itself
    assert by_id["teacher_onnx"]["accuracy"]["top1"] == pytest.approx(100.0)
    assert by_id["teacher_onnx"]["accuracy"]["agreement"] == pytest.approx(100.0)
    assert (run_dir / "tensorrt" / "loopback" / "bench.log").is_file()
    assert not list(run_dir.glob(".ship-tmp-*"))

    bench_before = (run_dir / "bench" / "loopback.json").read_bytes()
    second = ship(run_dir, device)
    assert (second.uploaded_files, second.uploaded_bytes, second.ran_bench, second.downloaded) == (0, 0, False, False)
    assert second.bundle_id == first.bundle_id
    assert (run_dir / "bench" / "loopback.json").read_bytes() == bench_before

    os.utime(run_dir / "export" / "student.onnx")  # touched, same content: still nothing to copy
    assert ship(run_dir, device).uploaded_files == 0


def test_connection_killed_mid_copy_then_retry_completes(sshd, isolated_python, run_dir, tmp_path):
    remote = tmp_path / "remote"
    device = sshd.device(remote, isolated_python, ["onnxruntime"])
    teacher_size = (run_dir / "export" / "teacher.onnx").stat().st_size
    killed: list[int] = []

    def kill_scp_mid_copy() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            for path in (remote / "staging").glob("up-*/*"):
                try:
                    size = path.stat().st_size
                except OSError:
                    continue
                if 0 < size < teacher_size:
                    for pid in _children("scp"):
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
                    break
            time.sleep(0.001)

    watcher = threading.Thread(target=kill_scp_mid_copy)
    watcher.start()
    with pytest.raises(EdgekdError, match="upload"):
        ship(run_dir, device)
    watcher.join()
    assert killed, "the copy finished before it could be interrupted"
    for obj in (remote / "objects").iterdir():  # only whole files made it into objects/
        assert hashlib.sha256(obj.read_bytes()).hexdigest() == obj.name
    assert not (run_dir / "bench" / "loopback.json").exists() and not (run_dir / "tensorrt").exists()

    result = ship(run_dir, device)
    assert result.uploaded_files > 0 and result.ran_bench and result.downloaded
    assert all(
        a["status"] == "done" for a in json.loads((run_dir / "bench" / "loopback.json").read_text())["artifacts"]
    )
    assert not list((remote / "staging").iterdir())


def test_results_survive_a_stopped_server_between_bench_and_download(sshd, isolated_python, run_dir, tmp_path):
    """The device finished but the link dropped before the download: the next ship only downloads."""
    device = sshd.device(tmp_path / "remote", isolated_python, ["onnxruntime"])
    ship(run_dir, device)
    (run_dir / "bench" / "loopback.json").unlink()
    sshd.stop()
    try:
        with pytest.raises(EdgekdError, match="unreachable"):
            ship(run_dir, device)
    finally:
        sshd.start()
    again = ship(run_dir, device)
    assert (again.uploaded_files, again.ran_bench, again.downloaded) == (0, False, True)
    assert (run_dir / "bench" / "loopback.json").is_file()


def test_unreachable_device_is_a_clear_error(sshd, isolated_python, run_dir, tmp_path):
    device = sshd.device(tmp_path / "remote", isolated_python, ["onnxruntime"])
    device.port = sshd.port + 1 if sshd.port < 65535 else sshd.port - 1
    with pytest.raises(EdgekdError, match=r"device 'loopback' \(.*127\.0\.0\.1.*\): unreachable over SSH: .*refused"):
        ship(run_dir, device)


def test_unknown_host_key_is_refused(sshd, isolated_python, run_dir, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    device = sshd.device(tmp_path / "remote", isolated_python, ["onnxruntime"])
    device.ssh_options = [f"UserKnownHostsFile={empty}", f"GlobalKnownHostsFile={empty}"]
    with pytest.raises(EdgekdError, match="host key not known or changed"):
        check_device(device)


def test_check_reports_missing_tensorrt(sshd, isolated_python, tmp_path):
    device = sshd.device(tmp_path / "remote", isolated_python, ["tensorrt", "onnxruntime"])
    report = check_device(device)
    assert not report.ok
    assert any(
        p.startswith("tensorrt is not importable by") and "backend tensorrt needs it" in p for p in report.problems
    )
    assert not any(p.startswith("onnxruntime") for p in report.problems)
    assert report.probe["libraries"]["numpy"]["version"]
    with pytest.raises(EdgekdError, match="device 'loopback' is not ready: tensorrt is not importable"):
        report.require_ok()


def test_missing_python_is_named(sshd, tmp_path):
    device = sshd.device(tmp_path / "remote", "/nonexistent/python3", ["onnxruntime"])
    with pytest.raises(EdgekdError, match="python '/nonexistent/python3' not found on the device"):
        check_device(device)


def test_ship_to_a_tensorrt_device_without_tensorrt_stops_before_copying(sshd, isolated_python, run_dir, tmp_path):
    device = sshd.device(tmp_path / "remote", isolated_python, ["tensorrt"])
    with pytest.raises(EdgekdError, match="device 'loopback' is not ready: tensorrt is not importable"):
        ship(run_dir, device)
    assert not list((tmp_path / "remote" / "objects").iterdir())


def test_engines_only_needs_the_tensorrt_backend(run_dir, tmp_path, sshd, isolated_python):
    device = sshd.device(tmp_path / "remote", isolated_python, ["onnxruntime"])
    with pytest.raises(EdgekdError, match="--engines-only: device 'loopback' has no tensorrt backend"):
        ship(run_dir, device, engines_only=True)


def _tamper_results(remote: Path, bundle_id: str, run_dir: Path) -> Path:
    """Clear the local copy so the next ship downloads the device's results; return the device's engine folder."""
    (run_dir / "bench" / "loopback.json").unlink()
    folder = remote / "results" / bundle_id / "tensorrt" / "loopback"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_a_device_cannot_write_outside_the_cache_through_a_sidecar(
    sshd, isolated_python, run_dir, tmp_path, monkeypatch
):
    """A malicious device answers with an engine whose sidecar puts a path in source_sha256: refused, nothing written."""
    monkeypatch.setenv("EDGEKD_CACHE_DIR", str(tmp_path / "cache"))
    remote, outside = tmp_path / "remote", tmp_path / "outside"
    device = sshd.device(remote, isolated_python, ["onnxruntime"])
    first = ship(run_dir, device)
    folder = _tamper_results(remote, first.bundle_id, run_dir)
    (folder / "evil.engine").write_bytes(b"engine of the device's choosing")
    sidecar = {
        "schema": "edgekd.engine/1",
        "tensorrt": "8.5.2.2",
        "device_kind": device.kind,
        "precision": "fp16",
        "options": {
            "precision": "fp16",
            "dla_core": None,
            "static_shapes": False,
            "workspace_mb": 1024,
            "min_batch": 1,
            "opt_batch": 8,
            "max_batch": 32,
        },
        "source_sha256": str(outside / "x" / "y"),
        "engine_sha256": hashlib.sha256(b"engine of the device's choosing").hexdigest(),
    }
    (folder / "evil.json").write_text(json.dumps(sidecar))
    with pytest.raises(EdgekdError, match="source_sha256 is .*expected 64 lowercase hex digits"):
        ship(run_dir, device)
    assert not outside.exists() and not (tmp_path / "cache").exists()
    assert not (run_dir / "bench" / "loopback.json").exists() and not list(run_dir.glob(".ship-tmp-*"))


def test_device_results_with_paths_out_of_the_run_are_refused(sshd, isolated_python, run_dir, tmp_path):
    """A bench file whose artifact path climbs out of the run dir, or a result file with an odd name: refused whole."""
    remote = tmp_path / "remote"
    device = sshd.device(remote, isolated_python, ["onnxruntime"])
    first = ship(run_dir, device)
    folder = _tamper_results(remote, first.bundle_id, run_dir)
    bench = remote / "results" / first.bundle_id / "bench" / "loopback.json"
    good = bench.read_text()
    doc = json.loads(good)
    doc["artifacts"][0]["path"] = "../../../etc/passwd"
    bench.write_text(json.dumps(doc))
    with pytest.raises(EdgekdError, match=r"artifacts\[0\]: path '../../../etc/passwd' is not a plain relative path"):
        ship(run_dir, device)
    bench.write_text(good)
    (folder / "..hidden").write_text("")
    with pytest.raises(EdgekdError, match=r"\.\.hidden: not a plain file name; refused"):
        ship(run_dir, device)
    assert not (run_dir / "bench" / "loopback.json").exists() and not list(run_dir.glob(".ship-tmp-*"))


def test_a_replaced_device_object_is_refused_before_it_is_linked(sshd, isolated_python, run_dir, tmp_path):
    """The device's copy of student.onnx is swapped for the teacher's bytes and the bundle must be assembled
    again: the device re-hashes every object first and refuses (issue 22 item 3)."""
    remote = tmp_path / "remote"
    device = sshd.device(remote, isolated_python, ["onnxruntime"])
    ship(run_dir, device)
    student = hashlib.sha256((run_dir / "export" / "student.onnx").read_bytes()).hexdigest()
    obj = remote / "objects" / student
    obj.unlink()
    obj.write_bytes((run_dir / "export" / "teacher.onnx").read_bytes())
    for folder in ("bundles", "results"):
        for path in sorted((remote / folder).rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
    (run_dir / "bench" / "loopback.json").unlink()
    with pytest.raises(
        EdgekdError, match=rf"placing the bundle .*object .*/objects/{student} does not hash to its name"
    ):
        ship(run_dir, device)
    assert not list((remote / "bundles").iterdir())
    assert not (run_dir / "bench" / "loopback.json").exists()


def test_figures_for_a_file_that_was_not_shipped_are_refused(sshd, isolated_python, run_dir, tmp_path):
    """The file inside the assembled bundle is swapped after assembly: the device measures what it was given,
    and the host refuses figures whose sha256 is not the one it shipped (issue 22 item 3)."""
    remote = tmp_path / "remote"
    device = sshd.device(remote, isolated_python, ["onnxruntime"])
    first = ship(run_dir, device)
    linked = remote / "bundles" / first.bundle_id / "export" / "student.onnx"
    linked.unlink()
    linked.write_bytes((run_dir / "export" / "teacher.onnx").read_bytes())
    (run_dir / "bench" / "loopback.json").unlink()
    with pytest.raises(
        EdgekdError, match=r"export/student.onnx was measured with sha256 .* not the .* that was shipped"
    ):
        ship(run_dir, device, force=True)
    assert not (run_dir / "bench" / "loopback.json").exists()


def test_device_answers_that_once_raised_tracebacks_are_one_line_refusals(sshd, isolated_python, run_dir, tmp_path):
    """Issue 22 item 8: a bench file nested 50,000 levels deep, a sidecar asking for a 10**300 MB workspace,
    and a `ship.json` of the device's own (a folder) each end in a one-line EdgekdError, with nothing moved in."""
    remote = tmp_path / "remote"
    device = sshd.device(remote, isolated_python, ["onnxruntime"])
    first = ship(run_dir, device)
    folder = _tamper_results(remote, first.bundle_id, run_dir)
    bench = remote / "results" / first.bundle_id / "bench" / "loopback.json"
    good = bench.read_text()
    bench.write_text("[" * 50_000 + "]" * 50_000)
    with pytest.raises(EdgekdError, match="nested too deeply"):
        ship(run_dir, device)
    bench.write_text(good)
    (folder / "ship.json").mkdir()
    with pytest.raises(EdgekdError, match=r"tensorrt/loopback/ship.json is the host's record; refused"):
        ship(run_dir, device)
    (folder / "ship.json").rmdir()
    (folder / "big.engine").write_bytes(b"e")
    options = {"precision": "fp16", "dla_core": None, "static_shapes": False, "workspace_mb": 10**300}
    options.update(min_batch=1, opt_batch=1, max_batch=1)
    sidecar = {"schema": "edgekd.engine/1", "tensorrt": "8.5.2.2", "device_kind": device.kind, "precision": "fp16"}
    sidecar.update(options=options, source_sha256="0" * 64, engine_sha256=hashlib.sha256(b"e").hexdigest())
    (folder / "big.json").write_text(json.dumps(sidecar))
    with pytest.raises(EdgekdError, match=r"workspace_mb 1000000000\d* is outside 16\.\.1048576"):
        ship(run_dir, device)
    assert not (run_dir / "bench" / "loopback.json").exists() and not list(run_dir.glob(".ship-tmp-*"))


def test_one_ship_at_a_time_in_a_device_workdir(sshd, isolated_python, run_dir, tmp_path):
    """Issue 22 item 6, on the device side: a ship from another host (or run) holds the workdir's lock over its
    own SSH connection; a second ship is refused, and the lock goes with the first one's connection."""
    from edgekd.fleet.ship import RemoteLayout
    from edgekd.fleet.ssh import Ssh

    remote = tmp_path / "remote"
    device = sshd.device(remote, isolated_python, ["onnxruntime"])
    with Ssh(device).holding_lock(RemoteLayout(device.workdir).lock):
        with pytest.raises(EdgekdError, match=r"device 'loopback' .*: its workdir is in use by another edgekd ship"):
            ship(run_dir, device)
        assert not (remote / "objects").exists()  # refused before it touched the workdir
    assert ship(run_dir, device).ran_bench  # released when the holder's block ended
