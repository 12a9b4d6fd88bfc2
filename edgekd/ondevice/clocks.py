"""Lock a Jetson's clocks for a bench (`jetson_clocks`) and put them back afterwards, also when the bench fails."""

import contextlib
import os
import subprocess
import tempfile
from typing import Callable, Dict, Iterator, Optional

from .probe import as_root, find_tool


def _run(argv: list) -> Optional[str]:
    """None when the command succeeded, else why not (one line)."""
    try:
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60, text=True)
    except (OSError, subprocess.SubprocessError) as e:
        return f"{type(e).__name__}: {e}"
    if done.returncode == 0:
        return None
    lines = done.stdout.strip().splitlines()
    return "{} exited {}: {}".format(" ".join(argv), done.returncode, lines[-1] if lines else "no output")


@contextlib.contextmanager
def locked_clocks(wanted: bool, log: Callable[[str], None]) -> Iterator[Dict[str, object]]:
    """While open, clocks are at their maximum when `wanted` (and `jetson_clocks` may run as root or by `sudo -n`).

    Yields {"requested", "locked_by_bench", "error"}; the state saved by `jetson_clocks --store`
    is restored on the way out, whatever happened inside.
    """
    note = {"requested": wanted, "locked_by_bench": False, "error": None}  # type: Dict[str, object]
    tool = find_tool("jetson_clocks") if wanted else None
    if wanted and tool is None:
        note["error"] = "jetson_clocks not found"
    saved = None
    if tool is not None:
        fd, saved = tempfile.mkstemp(prefix="edgekd-clocks-", suffix=".conf")
        os.close(fd)
        os.unlink(saved)  # jetson_clocks --store writes it as root
        note["error"] = _run(as_root([tool, "--store", saved])) or _run(as_root([tool]))
        note["locked_by_bench"] = note["error"] is None
        if note["error"]:
            log("lock_clocks: could not lock the clocks: {}".format(note["error"]))
    try:
        yield note
    finally:
        if saved is not None and os.path.exists(saved):
            why = _run(as_root([tool, "--restore", saved]))
            if why:
                log(f"lock_clocks: could not restore the clocks: {why}")
                note["error"] = "restore failed: " + why
            _run(as_root(["rm", "-f", saved]))
