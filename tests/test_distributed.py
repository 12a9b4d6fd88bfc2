"""`edgekd run --nproc 2`: a real 2-process gloo run on the CPU matches a 1-process run."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

LEAN = "qat:\n  enabled: false\ndynamic_quant:\n  enabled: false\nexport:\n  enabled: false\n"


def test_two_processes_match_one(tiny_pipeline, tmp_path):
    path = tiny_pipeline(distill_epochs=4, teacher_epochs=4, limit_train=1024, extra=LEAN)
    results = {}
    for nproc in (1, 2):
        run_dir = tmp_path / f"n{nproc}"
        cmd = [sys.executable, "-m", "edgekd.cli", "run", str(path), "--run-dir", str(run_dir), "--nproc", str(nproc)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        manifest = json.loads((run_dir / "manifest.json").read_text())
        assert manifest["stages"]["distill"]["status"] == "done"
        results[nproc] = manifest["stages"]["distill"]["metrics"]["val_top1"]
        if nproc == 2:
            assert "2 processes" in done.stderr
            assert not (run_dir / ".ranks").exists()  # rank 1's scratch is gone once the run is through
    # the same global batches, split over two processes: BatchNorm sees half batches, so not bit-identical
    assert results[1] > 80, results  # trained far enough for the comparison to mean something
    assert abs(results[1] - results[2]) <= 4.0, results


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_nodes(path, run_dirs):
    """Two `edgekd run` agents (torchrun nodes 0 and 1, one gloo process each) meeting on 127.0.0.1."""
    port = _free_port()
    agents = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edgekd.cli",
                "run",
                str(path),
                "--run-dir",
                str(run_dir),
                "--nnodes",
                "2",
                "--node-rank",
                str(rank),
                "--master-addr",
                "127.0.0.1",
                "--master-port",
                str(port),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank, run_dir in enumerate(run_dirs)
    ]
    return [(a.communicate(timeout=600)[0], a.returncode) for a in agents]


def test_two_nodes_with_their_own_run_directories_are_refused_up_front(tiny_pipeline, tmp_path):
    path = tiny_pipeline(extra=LEAN)
    results = _two_nodes(path, [tmp_path / "node0", tmp_path / "node1"])
    assert all(code != 0 for _, code in results), results
    assert "needs a shared run directory" in results[1][0], results[1][0][-3000:]
    assert not (tmp_path / "node0" / "manifest.json").exists()  # refused before the first stage


def test_two_nodes_sharing_a_run_directory_train_together(tiny_pipeline, tmp_path):
    path = tiny_pipeline(distill_epochs=1, limit_train=256, extra=LEAN)
    run_dir = tmp_path / "shared"
    results = _two_nodes(path, [run_dir, run_dir])
    assert all(code == 0 for _, code in results), [out[-3000:] for out, _ in results]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["stages"]["distill"]["status"] == "done"
    assert "2 processes" in results[0][0]
