"""The Dockerfile: hadolint-clean, two non-root targets, layers ordered so code changes keep torch cached.

Docker itself does not run here; these tests read the file (and run hadolint when installed).
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"


def _instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending = f"{pending} {line[:-1]}" if line.endswith("\\") else f"{pending} {line}"
        if not line.endswith("\\"):
            word, _, args = pending.strip().partition(" ")
            out.append((word.upper(), args.strip()))
            pending = ""
    return out


def _stages() -> dict[str, list[tuple[str, str]]]:
    """Instructions by stage name (FROM ... AS name)."""
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for word, args in _instructions():
        if word == "FROM":
            parts = args.split()
            current = []
            stages[parts[-1] if len(parts) >= 3 and parts[-2].upper() == "AS" else parts[0]] = current
        current.append((word, args))
    return stages


def _index(stage: list[tuple[str, str]], word: str, contains: str) -> int:
    return next(i for i, (w, a) in enumerate(stage) if w == word and contains in a)


def _copy_sources(args: str) -> list[str]:
    parts = [p for p in shlex.split(args) if not p.startswith("--")]
    return parts[:-1]


def _hadolint(text: str) -> subprocess.CompletedProcess:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed: run .ci/install-hadolint")
    return subprocess.run(
        [hadolint, "--no-color", "--format", "json", "-"], input=text, capture_output=True, text=True, cwd=ROOT
    )


def test_hadolint_passes():
    result = _hadolint(DOCKERFILE.read_text(encoding="utf-8"))
    assert result.returncode == 0, f"hadolint Dockerfile:\n{result.stdout}{result.stderr}"


def test_every_hadolint_ignore_is_needed_and_explained():
    lines = DOCKERFILE.read_text(encoding="utf-8").splitlines()
    ignores = {
        i: line.split("=", 1)[1].replace(" ", "").split(",")
        for i, line in enumerate(lines)
        if "hadolint ignore=" in line
    }
    for i in ignores:
        before = lines[i - 1].strip() if i else ""
        assert before.startswith("#") and "hadolint" not in before, (
            f"Dockerfile:{i + 1}: explain the ignore in the comment just above it"
        )
    # without the ignore comments, hadolint must report each ignored rule on the instruction that follows it
    kept = [line for i, line in enumerate(lines) if i not in ignores]
    found = {(f["code"], f["line"]) for f in json.loads(_hadolint("\n".join(kept) + "\n").stdout or "[]")}
    for i, codes in ignores.items():
        line = i + 1 - sum(1 for j in ignores if j < i)  # 1-based line of the next instruction once ignores are gone
        for code in codes:
            assert (code, line) in found, f"Dockerfile:{i + 1}: `hadolint ignore={code}` ignores nothing; remove it"


@pytest.mark.parametrize("target", ["host", "jetson"])
def test_targets_run_as_a_numeric_non_root_user(target):
    stage = _stages()[target]
    users = [args for word, args in stage if word == "USER"]
    assert users, f"stage {target} has no USER"
    user = users[-1].split(":")[0]
    assert user.isdigit() and int(user) != 0, f"stage {target} ends as USER {users[-1]}"
    created = " ".join(args for word, args in stage if word == "RUN")
    assert f"--uid {user}" in created, f"stage {target} runs as {user} but creates no such user"


def test_entrypoints():
    stages = _stages()
    host = [json.loads(a) for w, a in stages["host"] if w == "ENTRYPOINT"]
    jetson = [json.loads(a) for w, a in stages["jetson"] if w == "ENTRYPOINT"]
    assert host[-1] == ["edgekd"]
    assert jetson[-1] == ["python3", "-m", "edgekd_device.bench"]
    assert "def main(" in (ROOT / "edgekd" / "ondevice" / "bench.py").read_text(encoding="utf-8")


def test_host_installs_dependencies_before_copying_the_code():
    stage = _stages()["host"]
    torch = _index(stage, "RUN", "TORCH_INDEX_URL")
    code = _index(stage, "COPY", "edgekd/")
    assert torch < code
    for word, args in stage[:torch]:
        if word == "COPY":
            assert set(_copy_sources(args)) <= {"pyproject.toml", "docker/project_deps.py"}, (
                f"COPY {args} before the torch layer"
            )


def test_jetson_holds_only_the_device_code_and_no_torch():
    stages = _stages()
    for name in ("jetson", "jetson-wheels"):
        text = " ".join(a for _, a in stages[name])
        assert "torch" not in text, f"stage {name} mentions torch"
    sources = [s for w, a in stages["jetson"] if w == "COPY" and "--from" not in a for s in _copy_sources(a)]
    assert sources and all(s.startswith("edgekd/ondevice/") for s in sources), sources


def test_dockerignore_lets_every_copied_path_through():
    patterns = [
        p.strip()
        for p in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if p.strip() and not p.startswith("#")
    ]
    allowed = [p[1:].rstrip("/") for p in patterns if p.startswith("!")]
    assert patterns[0] == "*", ".dockerignore is an allow-list"
    for word, args in _instructions():
        if word == "COPY" and "--from" not in args:
            for source in _copy_sources(args):
                stem = source.rstrip("*").rstrip("/")
                assert any(stem == a or stem.startswith(a + "/") or fnmatch.fnmatch(stem, a) for a in allowed), (
                    f"COPY {source} is ignored by .dockerignore"
                )


def test_project_deps_splits_pyproject_dependencies():
    script = ROOT / "docker" / "project_deps.py"

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(script), str(ROOT / "pyproject.toml"), *args], capture_output=True, text=True
        )

    torch = run("--only", "torch", "torchvision").stdout.split()
    rest = run("--exclude", "torch", "torchvision").stdout.split()
    everything = run().stdout.split()
    assert [re.match(r"[A-Za-z0-9_.-]+", s).group() for s in torch] == ["torch", "torchvision"]
    assert sorted(torch + rest) == sorted(everything) and not set(torch) & set(rest)
    missing = run("--only", "torhc")
    assert missing.returncode == 1 and "torhc" in missing.stderr
