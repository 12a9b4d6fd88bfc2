"""edgekd/ondevice runs alone on a Jetson: Python 3.8 syntax, and imports of stdlib, numpy, tensorrt, pycuda, onnxruntime only."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import edgekd.ondevice

DEVICE_DIR = Path(edgekd.ondevice.__file__).parent
ALLOWED_THIRD_PARTY = {"numpy", "tensorrt", "pycuda", "onnxruntime"}


def test_python38_compatible_by_vermin():
    vermin = shutil.which("vermin")
    if vermin is None:
        pytest.skip("vermin is not installed (pip install vermin)")
    proc = subprocess.run(
        [vermin, "--no-tips", "--violations", "--target=3.8-", str(DEVICE_DIR)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("module", sorted(p.name for p in DEVICE_DIR.glob("*.py")))
def test_imports_only_stdlib_numpy_and_device_libraries(module):
    tree = ast.parse((DEVICE_DIR / module).read_text(), filename=module)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots = [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level > 0:  # relative: another module of this folder, which this test checks too
                assert node.module is None or (DEVICE_DIR / f"{node.module.split('.')[0]}.py").is_file(), ast.dump(node)
                continue
            roots = [node.module.split(".")[0]]
        else:
            continue
        for root in roots:
            assert root in sys.stdlib_module_names or root in ALLOWED_THIRD_PARTY, (
                f"{module}:{node.lineno} imports {root}"
            )
