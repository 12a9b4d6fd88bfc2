"""Multi-process training under torchrun: DistributedDataParallel with NCCL on GPUs, gloo on CPUs.

`edgekd run --nproc N` re-launches the same command under `torch.distributed.run`; every
process runs the training stages on its share of each batch, and rank 0 alone runs the other
stages and writes artifacts and the manifest.

A process that is gone (killed, its node down or cut off) ends the others instead of leaving them waiting:
a collective that cannot complete fails after the peer timeout (`edgekd run --peer-timeout`, or at once when
the dead process's sockets close), and `lost_peer` turns that failure into one line that says how to resume.
While rank 0 runs a stage alone the others wait for it in `wait_for_main`, for as long as the stage takes.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from edgekd.errors import EdgekdError


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


SOLO_STAGE_WAIT = timedelta(days=7)  # how long the other ranks wait for a stage rank 0 runs alone: as long as it takes

# set by init_from_env: the gloo group wait_for_main waits in, and the peer timeout (`edgekd run --peer-timeout`)
_waiting: dist.ProcessGroup | None = None
_peer_timeout: timedelta | None = None


def barrier() -> None:
    """Every process waits for every other, each up to the peer timeout (all of them are working on one step)."""
    if world_size() > 1:
        dist.barrier()


def broadcast(value: object) -> object:
    """Rank 0's `value` on every process (pickled over the process group); `value` itself in a single process."""
    if world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box)
    return box[0]


def agree(value: object, what: str) -> None:
    """Check that every process holds the same `value` (an internal invariant: a RuntimeError names `what`)."""
    if world_size() == 1:
        return
    seen: list = [None] * world_size()
    dist.all_gather_object(seen, value)
    if odd := [r for r, v in enumerate(seen) if v != seen[0]]:
        raise RuntimeError(f"{what}: rank {odd[0]} has {seen[odd[0]]!r}, rank 0 has {seen[0]!r}")


def wait_for_main() -> None:
    """After a stage rank 0 ran alone: the other ranks wait for rank 0 for as long as the stage takes, and rank 0,
    which arrives last, gives each of them the peer timeout to answer (a node that vanished is noticed here)."""
    if world_size() > 1:
        dist.monitored_barrier(group=_waiting, timeout=_peer_timeout if is_main() else None)


def init_from_env(device: torch.device, peer_timeout: timedelta) -> bool:
    """Join the process group torchrun described in the environment; False when not under torchrun.

    Collectives wait up to `peer_timeout` for a process that does not answer (gloo's default is 30 minutes,
    NCCL's 10), then fail, and `lost_peer` explains the failure."""
    global _waiting, _peer_timeout
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) < 2:
        return False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend, timeout=peer_timeout)
        _waiting, _peer_timeout = dist.new_group(backend="gloo", timeout=SOLO_STAGE_WAIT), peer_timeout
    return True


# How a collective reports a process that is gone: torch's DistError (NCCL, the store) or, from gloo, a RuntimeError
# raised in gloo's transport ("Connection closed by peer", "Timed out waiting ...") or by monitored_barrier.
_GLOO_LOST = ("gloo/transport/", "failed to pass monitoredBarrier")


def lost_peer(error: BaseException) -> EdgekdError | None:
    """The one-line error for a failure that means another process of the run is gone; None for any other."""
    if world_size() == 1 or not isinstance(error, RuntimeError):
        return None
    text = str(error).strip()  # e.g. "[.../gloo/transport/tcp/pair.cc:561] Connection closed by peer [...]. This ..."
    if not isinstance(error, dist.DistError) and not any(mark in text for mark in _GLOO_LOST):
        return None
    # its first sentence, without gloo's "[file:line] " or monitored_barrier's "[Rank 0]: "
    cause = re.sub(r"^(\[[^\]]*\]:?\s*)+", "", " ".join(text.split())).split(". ")[0]
    return EdgekdError(
        f"rank {rank()} lost contact with another process of this run ({cause}): that process failed (see its "
        "node's output), or its node died or was cut off; finished stages and the last finished epoch's checkpoint "
        "are kept: run the same command again on every node (or on one node, without --nnodes and its options) to "
        "resume from them"
    )


def check_shared_dir(token: Path, root: Path, wait_s: float = 10.0) -> None:
    """Refuse, on every process at once, a run whose processes do not all see one run directory (nodes without a
    shared filesystem): rank 0 writes a fresh token to `token`, every rank reads it back (waiting up to `wait_s`
    for a network filesystem to catch up), and all compare notes. Without it, a rank on another node would look
    for files rank 0 made in a folder of its own and wait for them forever."""
    if world_size() == 1:
        return
    value = [secrets.token_hex(16) if is_main() else None]
    dist.broadcast_object_list(value)
    if is_main():
        token.parent.mkdir(parents=True, exist_ok=True)
        token.write_text(value[0], encoding="utf-8")
    barrier()
    deadline = time.monotonic() + wait_s
    while True:
        try:
            seen = token.read_text(encoding="utf-8") == value[0]
        except OSError:
            seen = False
        if seen or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    notes: list = [None] * world_size()
    dist.all_gather_object(notes, (rank(), socket.gethostname(), seen))
    blind = [(r, host) for r, host, ok in notes if not ok]
    if blind:
        r, host = blind[0]
        raise EdgekdError(
            f"run directory {root}: rank {r} on {host} does not see the files rank 0 writes there; training across "
            "machines needs a shared run directory (one filesystem, e.g. NFS, at the same path on every node: --run-dir)"
        )


def choose_device(want: str) -> torch.device:
    """The device the `device:` setting names here: `cuda` without a visible GPU is a user error, `auto` takes
    the GPU when there is one."""
    if want == "cuda" and not torch.cuda.is_available():
        raise EdgekdError("device: 'cuda' was asked for but no CUDA GPU is visible to PyTorch; use 'auto' or 'cpu'")
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(want)


def local_device(device: torch.device) -> torch.device:
    """This process's device: its own GPU under torchrun (LOCAL_RANK), else `device`."""
    if device.type == "cuda" and world_size() > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum of `values` over all processes."""
    if world_size() == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def average_gradients(params: list[torch.nn.Parameter]) -> None:
    """Average these parameters' gradients over all processes (for modules outside DDP)."""
    if world_size() == 1:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world_size()


def launch(argv: Sequence[str], nproc: int, torchrun_args: Sequence[str] = ()) -> int:
    """Run `edgekd <argv>` under torchrun with `nproc` processes per node; returns the exit code of its processes.

    torchrun's agent runs in this process (`torch.distributed.run.main`), so a failed process ends the command
    with that process's own message and exit code, not under torchrun's traceback of the agent."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    if nproc < 1:
        raise EdgekdError(f"--nproc {nproc}: needs at least 1 process")
    # the processes' share of the cores; they inherit this process's environment
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    try:
        torchrun([f"--nproc-per-node={nproc}", *torchrun_args, "-m", "edgekd.cli", *argv])
    except ChildFailedError as e:
        code = e.get_first_failure()[1].exitcode
        return code if code > 0 else 128 - code  # a process killed by a signal: 128 + its number, as a shell says
    except SignalException as e:  # Ctrl-C, or a scheduler's SIGTERM: the agent has stopped the processes
        return 128 + e.sigval
    return 0
