"""Atomic artifact writes: a write that fails (a full disk) leaves the previous artifact intact."""

import subprocess
import sys
import textwrap

from edgekd.ondevice.files import sha256_file, write_bytes_atomic


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "a.bin"
    write_bytes_atomic(path, b"one")
    write_bytes_atomic(path, b"two")
    assert path.read_bytes() == b"two" and [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_disk_full_during_write_keeps_previous_artifact(tmp_path):
    path = tmp_path / "model.pt"
    write_bytes_atomic(path, b"previous" * 1000)
    before = sha256_file(path)
    # A real write failure: the child may not write files over 64 KiB (RLIMIT_FSIZE -> EFBIG, as a full disk gives ENOSPC).
    child = textwrap.dedent(f"""
        import resource, signal, sys
        from pathlib import Path
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
        from edgekd.ondevice.files import write_bytes_atomic
        try:
            write_bytes_atomic(Path({str(path)!r}), b"x" * 1_000_000)
        except OSError as e:
            print("failed:", e.errno)
            sys.exit(3)
    """)
    result = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=60)
    assert result.returncode == 3, result.stderr
    assert sha256_file(path) == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary file left behind
