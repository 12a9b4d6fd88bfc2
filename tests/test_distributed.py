"""Training under torchrun with real gloo processes on the CPU: `--nproc 2` on one node against one process, two
`edgekd run` nodes on 127.0.0.1 against `--nproc 2`, and a node that dies mid-epoch."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

LEAN = "qat:\n  enabled: false\ndynamic_quant:\n  enabled: false\nexport:\n  enabled: false\n"
# one thread per process in every layout: how many threads a kernel splits its sums over changes their rounding
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _run(path: Path, run_dir: Path, *options: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "edgekd.cli", "run", str(path), "--run-dir", str(run_dir), *options]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=ENV)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_nodes(path: Path, run_dirs: list[Path]) -> list[subprocess.Popen]:
    """Two `edgekd run` agents (torchrun nodes 0 and 1, one gloo process each) meeting on 127.0.0.1."""
    port = str(_free_port())
    return [
        subprocess.Popen(
            [sys.executable, "-m", "edgekd.cli", "run", str(path), "--run-dir", str(run_dir), "--nnodes", "2"]
            + ["--node-rank", str(rank), "--master-addr", "127.0.0.1", "--master-port", port],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            env=ENV,
        )
        for rank, run_dir in enumerate(run_dirs)
    ]


def _two_nodes(path: Path, run_dirs: list[Path]) -> list[tuple[str, int]]:
    return [(a.communicate(timeout=600)[0], a.returncode) for a in _start_nodes(path, run_dirs)]


def _stages(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())["stages"]


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def test_one_node_two_processes_and_two_nodes_train_alike(tiny_pipeline, tmp_path):
    path = tiny_pipeline(distill_epochs=4, teacher_epochs=4, limit_train=1024, extra=LEAN)
    top1 = {}
    for nproc in ("1", "2"):
        done = _run(path, tmp_path / f"n{nproc}", "--nproc", nproc)
        assert done.returncode == 0, done.stderr[-3000:]
        assert ("2 processes" in done.stderr) == (nproc == "2"), done.stderr[-3000:]
        top1[nproc] = _stages(tmp_path / f"n{nproc}")["distill"]["metrics"]["val_top1"]
    shared = tmp_path / "nodes"
    results = _two_nodes(path, [shared, shared])
    assert all(code == 0 for _, code in results), [out[-3000:] for out, _ in results]
    assert "2 processes" in results[0][0]
    top1["nodes"] = _stages(shared)["distill"]["metrics"]["val_top1"]
    for run_dir in (tmp_path / "n2", shared):
        assert not (run_dir / ".ranks").exists()  # rank 1's scratch is gone once the run is through

    # the same global batches, split over two processes: BatchNorm sees half batches, so not bit-identical
    assert top1["1"] > 80, top1  # trained far enough for the comparison to mean something
    assert abs(top1["1"] - top1["2"]) <= 4.0, top1
    # Two nodes are `--nproc 2` with another transport: the same ranks train the same shards with one thread each,
    # and gloo's allreduce over two processes adds the same two numbers on either side (IEEE addition commutes),
    # so no reduction order differs and the weights must match to the bit, not within a tolerance.
    assert top1["nodes"] == top1["2"], top1
    for rel in ("teacher/model.pt", "distill/student.pt"):
        one_node, two_nodes = _state(tmp_path / "n2" / rel), _state(shared / rel)
        assert one_node.keys() == two_nodes.keys()
        differ = [k for k in one_node if not torch.equal(one_node[k], two_nodes[k])]
        assert not differ, f"{rel}: {differ}"


def test_two_nodes_with_their_own_run_directories_are_refused_up_front(tiny_pipeline, tmp_path):
    path = tiny_pipeline(extra=LEAN)
    results = _two_nodes(path, [tmp_path / "node0", tmp_path / "node1"])
    assert all(code != 0 for _, code in results), results
    assert "needs a shared run directory" in results[1][0], results[1][0][-3000:]
    assert not (tmp_path / "node0" / "manifest.json").exists()  # refused before the first stage


def _kill_tree(root: int) -> None:
    """SIGKILL `root` and every process below it (torchrun starts each worker in a session of its own)."""
    for pid in _process_tree(root):
        with contextlib.suppress(ProcessLookupError):  # ended by itself meanwhile
            os.kill(pid, signal.SIGKILL)


def _process_tree(root: int) -> list[int]:
    """`root` and every process below it."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # ended while we looked
        children.setdefault(ppid, []).append(int(stat.parent.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds node 1's worker in /proc")
def test_a_node_that_dies_mid_epoch_ends_the_run_which_resumes_from_its_checkpoint(tiny_pipeline, tmp_path):
    epochs = 4
    path = tiny_pipeline(distill_epochs=epochs, limit_train=1024, extra=LEAN)
    run_dir = tmp_path / "shared"
    checkpoint = run_dir / "distill" / "checkpoint-last.pt"
    node0, node1 = _start_nodes(path, [run_dir, run_dir])
    try:
        deadline = time.monotonic() + 300
        while not checkpoint.exists():  # the first epoch is through: the kill lands in a later one
            assert node0.poll() is None and time.monotonic() < deadline, node0.communicate()[0][-3000:]
            time.sleep(0.05)
        _kill_tree(node1.pid)  # the node dies: its agent and its worker at once
        out = node0.communicate(timeout=90)[0]  # rank 0 stops on its own: it does not wait for a dead peer
    finally:
        for node in (node0, node1):
            if node.poll() is None:
                _kill_tree(node.pid)
            node.communicate()
    assert node0.returncode != 0, out[-3000:]
    assert "lost contact with another process of this run" in out, out[-3000:]
    assert "run the same command again" in out
    assert "Traceback" not in out, out[-3000:]
    assert _stages(run_dir)["distill"]["status"] == "failed"
    finished = torch.load(checkpoint, map_location="cpu", weights_only=True)["epoch"] + 1
    assert 1 <= finished < epochs, finished
    assert f"distill epoch {finished}/{epochs}:" in out and f"distill epoch {finished + 1}/{epochs}:" not in out

    resumed = _run(path, run_dir, "--nproc", "2")  # on fewer nodes: both processes start from rank 0's checkpoint
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"distill: resuming after epoch {finished} of {epochs} from checkpoint-last.pt" in resumed.stderr
    distill = _stages(run_dir)["distill"]
    assert distill["status"] == "done"
    assert (distill["metrics"]["resumed_from_epoch"], distill["metrics"]["epochs"]) == (finished, epochs)
