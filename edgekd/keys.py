"""Cache keys, computed rather than hand-listed: one function for `plan` and `run`.

A stage's key hashes
- config: the values at the paths the stage declares in `reads` (a path prefixed with `!` is left
  out), where every file a path field names is hashed by content (a moved checkpoint keeps its key,
  an edited one does not) and fields marked `json_schema_extra={"key": False}` (log-only switches)
  are left out;
- data: the data set's fingerprint (its files, sizes and mtimes) and the preprocessing every image gets
  (the student's weights may set it) when the stage reads `data`;
- inputs: the key of the stage that made each input artifact, so a change anywhere upstream
  reaches every stage downstream, and `plan` can tell without running anything;
- toolchain: edgekd's version and the versions of the packages named in `toolchain`;
- environment: what the stage says about this machine or run beyond its inputs (the GPU an engine is
  built for; the device bench files `edgekd ship` brought back, for the report).
Each part's digest is kept in the manifest, so "why does this stage re-run" has a precise answer.
"""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from edgekd import __version__
from edgekd.config import PipelineConfig
from edgekd.data.datasets import data_fingerprint
from edgekd.data.preprocessing import data_inputs
from edgekd.errors import EdgekdError
from edgekd.ondevice.files import sha256_file

PART_NAMES = {
    "config": "its config changed",
    "data": "the data changed",
    "inputs": "an input changed",
    "toolchain": "a library version changed",
    "environment": "this machine changed",
}


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _file_digest(path: Path) -> str:
    """sha256 of a file a config names; an unreadable one is a one-line error naming it."""
    try:
        return sha256_file(path)
    except OSError as e:
        raise EdgekdError(f"{path}: cannot read it ({e.strerror}); a file the config names must be readable") from None


def _value(obj: Any) -> Any:
    """A JSON-able picture of a config value: files by content, log-only fields left out."""
    if isinstance(obj, BaseModel):
        out = {}
        for name, info in type(obj).model_fields.items():
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            if extra.get("key", True) and not info.exclude:
                out[name] = _value(getattr(obj, name))
        return out
    if isinstance(obj, Path):
        return {"file_sha256": _file_digest(obj)} if obj.is_file() else {"path": str(obj)}
    if isinstance(obj, (list, tuple)):
        return [_value(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): _value(v) for k, v in obj.items()}
    return obj


def select(cfg: PipelineConfig, path: str) -> Any:
    """The config value at a dotted path (`export.opset`)."""
    value: Any = cfg
    for part in path.split("."):
        value = getattr(value, part)
    return value


def config_part(cfg: PipelineConfig, reads: tuple[str, ...]) -> dict:
    """{path: value} for every declared path, minus the `!`-prefixed exclusions."""
    chosen = {p: _value(select(cfg, p)) for p in reads if not p.startswith("!")}
    for excluded in (p[1:] for p in reads if p.startswith("!")):
        head, _, leaf = excluded.rpartition(".")
        if isinstance(chosen.get(head), dict):
            chosen[head].pop(leaf, None)
    return chosen


def versions(packages: tuple[str, ...]) -> dict[str, str | None]:
    out: dict[str, str | None] = {"edgekd": __version__}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def key_parts(stage: Any, cfg: PipelineConfig, run_dir: Path, input_keys: dict[str, str]) -> dict[str, str]:
    """The digest of each part of `stage`'s key (see the module doc); `input_keys` maps input ids to producer keys."""
    reads = tuple(stage.reads)
    parts = {
        "config": digest({"stage": stage.name, **config_part(cfg, reads)}),
        "inputs": digest(input_keys),
        "toolchain": digest(versions(tuple(stage.toolchain))),
    }
    if any(p == "data" or p.startswith("data.") for p in reads):  # the files, and what every image is turned into
        inputs = data_inputs(cfg.data, cfg.student).to_dict()
        parts["data"] = digest({"files": data_fingerprint(cfg.data, cfg.seed), "inputs": inputs})
    environment = getattr(stage, "environment", None)
    if environment is not None:
        parts["environment"] = digest(environment(cfg, run_dir))
    return parts


def combine(parts: dict[str, str]) -> str:
    return digest(parts)


def changed_parts(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """Names of the key parts that differ, for the log and `plan` ("its config changed")."""
    return [PART_NAMES.get(name, name) for name in sorted(set(old) | set(new)) if old.get(name) != new.get(name)]
