"""Dependencies point one way (../shared/DESIGN.md, "Layout"): cli → stages → pipeline → library modules → ondevice.

Imports are read with `ast`, function-local ones included (a lazy import is still a dependency). A unit
is a top-level module or subpackage of edgekd (`edgekd.config.loader` belongs to `config`). A unit may
import only units on lower layers; two units on one layer are independent of each other. A new
subpackage must be given a place in LAYERS before it can import anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "edgekd"

LAYERS: tuple[tuple[str, ...], ...] = (
    # lowest first
    ("ondevice",),  # runs on the device (Python 3.8, stdlib + numpy): nothing from the rest of edgekd
    ("edgekd", "errors"),  # the package itself (its version) and the one user-error type
    ("artifacts", "distributed", "progress"),  # host helpers: quarantine, torch.distributed ranks, progress lines
    ("config",),  # pydantic models of pipeline.yaml and devices.yaml, the YAML loader
    # The run directory: where each file lives (rundir), the typed records one stage writes and another
    # reads (run_records), and the manifest on top of both. The benchmark, the fleet code and the report
    # open a run through them (DESIGN.md, "One owner of the run directory"), so they sit below those.
    ("rundir", "run_records"),
    ("manifest",),
    # Library modules, usable without the pipeline. models (architectures, weights, input specs) and
    # export (TorchScript, ONNX) need no other library; data takes its input specs from models,
    # runtimes load models, quant writes through export; training (distill: objectives, trainer,
    # fine-tuning) needs data and models, the host benchmark needs data, models and runtimes; pruning
    # times candidates with the benchmark; the report and the fleet read what the benchmark and the devices
    # wrote; the search (sweeps, the scout) builds candidates, pruned ones too, times them and plots them.
    ("models", "export"),
    ("data", "runtimes", "quant"),
    ("distill", "bench"),
    ("prune", "report", "fleet"),
    ("search",),
    # What the runner needs on top of the libraries: cache keys (data fingerprints), checks before a run,
    # the generated YAML reference.
    ("keys", "preflight", "reference"),
    ("pipeline",),
    ("stages",),
    ("cli",),
)

RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}

KNOWN_VIOLATIONS: set[tuple[str, str]] = set()
"""(importing module, imported unit) pairs tolerated for now, each with the reason; none today."""


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


MODULES = _modules()


def _imports(name: str, path: Path) -> dict[str, int]:
    """edgekd modules that `name` imports (anywhere in the file), each with the line of its first import."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            # `from edgekd import config` imports the module edgekd.config; `from edgekd.config import X` the package
            candidates = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for target in candidates:
            while target and target not in MODULES:  # `import edgekd.x.y.z` of a name inside a module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.setdefault(target, node.lineno)
    return found


IMPORTS = {name: _imports(name, path) for name, path in MODULES.items()}


def unit(module: str) -> str:
    """`edgekd.config.loader` -> `config`; `edgekd` -> `edgekd`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_unit_has_a_layer():
    missing = sorted({unit(m) for m in MODULES} - set(RANK))
    assert not missing, f"place {missing} in tests/test_layers.py LAYERS (see DESIGN.md's Layout)"


def test_no_module_imports_a_unit_on_its_own_or_a_higher_layer():
    bad = []
    for module, imports in sorted(IMPORTS.items()):
        for target, line in sorted(imports.items()):
            src, dst = unit(module), unit(target)
            if src == dst or (module, dst) in KNOWN_VIOLATIONS:
                continue
            if RANK.get(dst, -1) >= RANK.get(src, -1):
                where = "the same layer as" if RANK[dst] == RANK[src] else "a higher layer than"
                bad.append(
                    f"{MODULES[module].relative_to(PACKAGE.parent)}:{line} imports {target}: {dst} is on {where} {src}"
                )
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_known_violations_are_still_real():
    real = {(m, unit(t)) for m, imports in IMPORTS.items() for t in imports}
    assert not KNOWN_VIOLATIONS - real, f"fixed, remove from KNOWN_VIOLATIONS: {sorted(KNOWN_VIOLATIONS - real)}"


def test_no_import_cycle_between_units():
    graph: dict[str, set[str]] = {}
    for module, imports in IMPORTS.items():
        graph.setdefault(unit(module), set()).update(unit(t) for t in imports if unit(t) != unit(module))
    cycles = _cycles(graph)
    assert not cycles, f"units that import each other: {cycles}"


def test_no_import_cycle_between_modules():
    graph = {module: set(imports) for module, imports in IMPORTS.items()}
    cycles = _cycles(graph)
    assert not cycles, f"modules that import each other: {cycles}"


def test_the_checker_sees_relative_lazy_and_module_imports():
    # the resolution the tests above rely on, on modules whose imports are known
    assert "edgekd.ondevice.catalog" in IMPORTS["edgekd.ondevice.bench"]  # from . import catalog
    assert "edgekd.config" in IMPORTS["edgekd.reference"]  # from edgekd import config
    assert "edgekd.ondevice.trt_options" in IMPORTS["edgekd.config.pipeline"]  # imported inside a validator
    assert unit("edgekd.config.loader") == "config" and unit("edgekd.cli") == "cli"
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
