"""Every package edgekd imports is one it declares: a core dependency, an extra (imported where the extra's feature
runs), a device-side library, or an optional import guarded by `except ImportError` that says what to install.

An undeclared import works on a machine where something else installed the package and fails on a user's fresh
venv: typer 0.29 stopped depending on click, and `import click` in the CLI made `pip install -e . && edgekd run`
end in ModuleNotFoundError on a fresh machine while every test here passed.
"""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]

DEVICE_ONLY = {"tensorrt", "pycuda"}
"""The Jetson's own libraries (JetPack), imported by edgekd/ondevice and the TensorRT runtime; never pip installed."""

GUARDED = {"onnxslim", "safetensors"}
"""Optional imports with a fallback or a one-line 'pip install ...' error of their own (export.simplify, .safetensors
weights), each inside try/except ImportError."""


def _name(requirement: str) -> str:
    return _canonical(re.split(r"[\s<>=!~\[;(]", requirement, maxsplit=1)[0])


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> tuple[set[str], set[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {_name(r) for r in project["dependencies"]}
    extras = {_name(r) for name, reqs in project["optional-dependencies"].items() if name != "test" for r in reqs}
    return core, extras


def _imports(tree: ast.AST) -> list[tuple[str, ast.AST]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name.split(".")[0], node) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module.split(".")[0], node))
    return found


def _guarded(tree: ast.AST, target: ast.AST) -> bool:
    """Whether `target` sits in the body of a try whose handlers catch ImportError (or ModuleNotFoundError)."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Try):
            continue
        caught = {ast.unparse(h.type) for h in node.handlers if h.type is not None}
        if not caught & {"ImportError", "ModuleNotFoundError"}:
            continue
        if any(target is inner for stmt in node.body for inner in ast.walk(stmt)):
            return True
    return False


def test_every_import_of_edgekd_is_declared():
    core, extras = _declared()
    dists = packages_distributions()
    stdlib = set(sys.stdlib_module_names) | {"__future__", "edgekd"}
    problems = []
    for path in sorted((ROOT / "edgekd").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        where = path.relative_to(ROOT)
        for module, node in _imports(tree):
            if module in stdlib or module in DEVICE_ONLY:
                continue
            if module in GUARDED:
                if not _guarded(tree, node):
                    problems.append(f"{where}:{node.lineno}: optional {module} imported outside try/except ImportError")
                continue
            owners = {_canonical(d) for d in dists.get(module, [])} or {_canonical(module)}  # not installed here
            if owners & core:
                continue
            elif owners & extras:
                if node in tree.body:
                    problems.append(f"{where}:{node.lineno}: {module} is an extra's but imported at module level")
            else:
                problems.append(
                    f"{where}:{node.lineno}: {module} ({', '.join(sorted(owners))}) is not in pyproject.toml"
                )
    assert not problems, "\n".join(problems)


def test_the_check_finds_an_undeclared_import_and_an_unguarded_optional_one():
    tree = ast.parse("import click\ntry:\n    import onnxslim\nexcept ImportError:\n    pass\nimport safetensors\n")
    modules = dict(_imports(tree))
    assert set(modules) == {"click", "onnxslim", "safetensors"}
    assert _guarded(tree, modules["onnxslim"]) and not _guarded(tree, modules["safetensors"])
    core, _ = _declared()
    assert "click" not in core and "torch" in core


def test_torchvision_and_scikit_learn_load_only_where_a_run_uses_them():
    """Every `edgekd` process pays for what it imports: torchvision loads torch._dynamo (2-3 s) and scikit-learn
    takes about 2 s. The CLI, the runner and every stage import neither; a torchvision model, ImageFolder data or
    augmentation loads torchvision where it is used, and the digits come from scikit-learn's file."""
    import subprocess

    stages = ", ".join(f"edgekd.stages.{p.stem}" for p in (ROOT / "edgekd" / "stages").glob("*.py"))
    code = (
        f"import sys, edgekd.cli, edgekd.pipeline, {stages}\n"
        "from edgekd.config import DataConfig\n"
        "from edgekd.data.datasets import load_data\n"
        "load_data(DataConfig(image_size=16), seed=0)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torchvision', 'sklearn'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", out.stdout
