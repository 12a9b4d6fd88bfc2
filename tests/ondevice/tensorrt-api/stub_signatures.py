"""Rebuild tensorrt-10.13.signatures.json: {"Class.method": [[parameter names, self left out], one per overload]}
from the typed stubs of tensorrt-stubs 10.13.0.35.1 (MIT; ../shared/tensorrt-api/stubs-10.13).

    python tests/ondevice/tensorrt-api/stub_signatures.py ../shared/tensorrt-api/stubs-10.13/tensorrt_bindings/tensorrt.pyi
"""

import ast
import json
import sys
from pathlib import Path


def signatures(pyi: str) -> dict:
    found: dict = {}
    for cls in (n for n in ast.parse(pyi).body if isinstance(n, ast.ClassDef)):
        for fn in (n for n in cls.body if isinstance(n, ast.FunctionDef)):
            found.setdefault(f"{cls.name}.{fn.name}", []).append([a.arg for a in fn.args.args[1:]])
    return found


if __name__ == "__main__":
    out = Path(__file__).with_name("tensorrt-10.13.signatures.json")
    doc = signatures(Path(sys.argv[1]).read_text())
    out.write_text(json.dumps(doc, sort_keys=True, indent=0) + "\n")
    print(f"{out}: {len(doc)} methods")
