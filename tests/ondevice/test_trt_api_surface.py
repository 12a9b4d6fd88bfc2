"""Every TensorRT name edgekd's code uses exists in each release the code path claims to support.

The name lists (../shared/tensorrt-api/*.names) come from TensorRT's own bindings at 8.5.2, 10.16 and
11.1. A function listed in trt_options.TRT_PATHS runs on the API families listed there; every other
function runs on all of them. The build reaches the listed functions only through BuildPlan.steps(),
which this file checks against the same table.
"""

import ast
import itertools
from pathlib import Path

import pytest

import edgekd
from edgekd.ondevice import trt_options
from edgekd.ondevice.trt_options import TRT_PATHS, BuildOptions, build_plan

ROOT = Path(edgekd.__file__).parent
API_DIR = Path(__file__).parent / "tensorrt-api"  # copied from ../shared/tensorrt-api (see its README)
TRT_MODULES = ("ondevice/trt_build.py", "ondevice/trt_runtime.py", "ondevice/calibrate.py")
TRT_ROOTS = {"trt", "tensorrt"}
HANDLES = {"builder", "network", "config", "parser", "engine", "context", "runtime", "inspector", "profile", "layer"}
"""Variables (or self.<name>) that hold TensorRT objects: the methods called on them are TensorRT names too."""


def release_names(family: str) -> set[str]:
    return set((API_DIR / f"tensorrt-{trt_options.RELEASES[family]}.names").read_text().split())


def _root(node: ast.AST) -> str | None:
    """The variable an attribute chain hangs off: `trt` for trt.A.B, `context` for self.context.m."""
    while isinstance(node, ast.Attribute):
        if isinstance(node.value, ast.Name) and node.value.id == "self" and node.attr in HANDLES:
            return node.attr
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def trt_names_by_scope(source: str, handles: bool = True) -> dict[str, set[str]]:
    """{top-level function or `Class.method` or `<module>`: TensorRT names used there}.

    With `handles`, methods called on HANDLES variables count too (in the TensorRT modules only).
    """
    found: dict[str, set[str]] = {}

    def visit(node: ast.AST, scope: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = scope
            if isinstance(child, (ast.FunctionDef, ast.ClassDef)):
                inner = child.name if scope == "<module>" else scope
                if isinstance(node, ast.ClassDef) and scope == node.name:
                    inner = f"{node.name}.{child.name}"
            is_handle = isinstance(child, ast.Attribute) and child.attr in HANDLES
            if isinstance(child, ast.Attribute) and not is_handle:
                root = _root(child)
                chain = []
                n: ast.AST = child
                while isinstance(n, ast.Attribute):
                    chain.append(n.attr)
                    n = n.value
                if root in TRT_ROOTS:
                    found.setdefault(scope, set()).update(a for a in chain if a not in HANDLES)
                elif handles and root in HANDLES:
                    found.setdefault(scope, set()).add(child.attr)
            visit(child, inner)

    visit(ast.parse(source), "<module>")
    return found


def check(source: str, paths: dict[str, tuple[str, ...]], handles: bool = True) -> list[str]:
    """`scope: name missing from release X` for every name a scope uses that a release it claims lacks."""
    problems = []
    for scope, used in sorted(trt_names_by_scope(source, handles).items()):
        function = scope.split(".")[0]
        used = {n for n in used if not (n.startswith("__") and n.endswith("__") and n != "__version__")}
        for family in paths.get(function, tuple(trt_options.RELEASES)):
            missing = sorted(used - release_names(family))
            if missing:
                problems.append(f"{scope}: {missing} missing from TensorRT {trt_options.RELEASES[family]}")
    return problems


def test_tensorrt_code_uses_only_names_of_the_releases_each_path_claims():
    problems = []
    for rel in TRT_MODULES:
        problems += [f"{rel}: {p}" for p in check((ROOT / rel).read_text(), TRT_PATHS)]
    assert problems == []


def test_host_modules_use_only_names_every_release_has():
    host = [p for p in ROOT.rglob("*.py") if p.relative_to(ROOT).as_posix() not in TRT_MODULES]
    problems = []
    for path in host:
        problems += [f"{path.relative_to(ROOT)}: {p}" for p in check(path.read_text(), {}, handles=False)]
    assert problems == []


def test_the_walk_sees_names_and_fails_on_a_name_a_release_lacks():
    source = (
        "def network(builder):\n"
        "    return builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))\n"
        "class Runner:\n"
        "    def run(self):\n"
        "        self.context.execute_async_v2(0)\n"
    )
    used = trt_names_by_scope(source)
    assert used["network"] == {"create_network", "NetworkDefinitionCreationFlag", "EXPLICIT_BATCH"}
    assert used["Runner.run"] == {"execute_async_v2"}
    problems = check(source, {})
    assert any("network: ['EXPLICIT_BATCH'] missing from TensorRT 11.1" in p for p in problems)
    assert any("execute_async_v2" in p and "10.16" in p for p in problems)
    assert check(source.split("class")[0], {"network": ("8.5", "10")}) == []


def test_every_path_in_the_table_is_a_function_of_the_trt_code_and_a_build_step():
    defined = set()
    steps = set()
    for rel in TRT_MODULES:
        tree = ast.parse((ROOT / rel).read_text())
        defined |= {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "STEPS" for t in node.targets):
                steps = {k.value for k in node.value.keys}  # type: ignore[attr-defined]
    assert set(TRT_PATHS) <= defined
    assert steps == set(TRT_PATHS)


@pytest.mark.parametrize("version", ["8.5.2.2", "8.6.1", "10.3.0", "10.16.0", "11.1.0"])
def test_each_plan_calls_only_steps_its_release_has(version):
    family = trt_options.api_family(version)
    for precision, dla in itertools.product(trt_options.PRECISIONS, (None, 0)):
        plan = build_plan(BuildOptions(precision, dla_core=dla, static_shapes=dla is not None), version)
        for step in plan.steps():
            assert family in TRT_PATHS[step], f"{precision} dla={dla} on {version} calls {step}"
        if plan.steps():
            assert plan.steps()[0].endswith("_network")
