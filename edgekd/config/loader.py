"""Reading pipeline.yaml: safe YAML with bounded aliases, validation, one-line errors, paths resolved.

A validation error becomes one EdgekdError that names the key, its line in the file and the nearest
valid key. Relative paths resolve against the YAML file's folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from edgekd.config.pipeline import PipelineConfig
from edgekd.errors import EdgekdError
from edgekd.ondevice.text import did_you_mean

MAX_YAML_ALIASES = 64
MAX_YAML_VALUES = 50_000
"""Budgets for YAML anchors: a real pipeline uses a few aliases and a few hundred values; an alias bomb
(aliases of aliases) would expand to billions, so it is refused before anything walks or validates it."""


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses more than MAX_YAML_ALIASES aliases while composing."""

    def __init__(self, text: str, where: str) -> None:
        super().__init__(text)
        self.where, self.aliases = where, 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_YAML_ALIASES:
                line = self.peek_event().start_mark.line + 1
                raise EdgekdError(
                    f"{self.where}:{line}: more than {MAX_YAML_ALIASES} YAML aliases (*name); write the values out"
                )
        return super().compose_node(parent, index)


def _compose(text: str, where: str) -> yaml.Node | None:
    """The YAML node tree, refused when its aliases are too many or would expand past MAX_YAML_VALUES values."""
    loader = _BoundedLoader(text, where)
    try:
        root = loader.get_single_node()
    except RecursionError:
        raise EdgekdError(f"{where}: YAML nested too deeply") from None
    finally:
        loader.dispose()
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:  # counted once per node object: linear even for an alias bomb
        if id(node) not in sizes:
            sizes[id(node)] = 1  # a recursive alias counts once
            if isinstance(node, yaml.MappingNode):
                children = [n for pair in node.value for n in pair]
            else:
                children = node.value if isinstance(node, yaml.SequenceNode) else []
            sizes[id(node)] = min(1 + sum(size(c) for c in children), MAX_YAML_VALUES + 1)
        return sizes[id(node)]

    try:
        total = size(root) if root is not None else 0
    except RecursionError:
        raise EdgekdError(f"{where}: YAML nested too deeply") from None
    if total > MAX_YAML_VALUES:
        raise EdgekdError(
            f"{where}: YAML aliases expand to more than {MAX_YAML_VALUES} values (an alias bomb?); write the values out"
        )
    return root


MAX_YAML_BYTES = 1 << 20
"""A pipeline or devices file is a page of settings; a larger one is refused before YAML parses it."""


def read_config_text(path: Path, what: str) -> str:
    """The text of a pipeline or devices file: a regular file of at most MAX_YAML_BYTES, UTF-8."""
    if not path.is_file():
        raise EdgekdError(f"{path}: {what} not found")
    try:
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            raise EdgekdError(f"{path}: the {what} holds {size} bytes, more than {MAX_YAML_BYTES}; refused")
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise EdgekdError(f"{path}: cannot read the {what}: {e}") from None


def read_config(path: Path, what: str) -> tuple[str, Any]:
    """The text of a pipeline or devices file and its YAML document; malformed YAML is one line with its line."""
    text = read_config_text(path, what)
    try:
        return text, _load_yaml(text, str(path))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise EdgekdError(f"{path}{line}: malformed YAML: {problem}") from None


def _load_yaml(text: str, where: str) -> Any:
    """yaml.safe_load, after _compose has checked the alias budgets."""
    _compose(text, where)
    return yaml.safe_load(text)


def _key_lines(text: str, where: str = "pipeline.yaml") -> dict[tuple, int]:
    """Map each key path in a YAML document to its 1-based line number; a key given twice is an error."""
    lines: dict[tuple, int] = {}

    def walk(node: yaml.Node, path: tuple) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = (*path, k.value)
                if key in lines:  # yaml.safe_load would silently keep the last one
                    dotted = ".".join(str(p) for p in key)
                    raise EdgekdError(
                        f"{where}:{k.start_mark.line + 1}: duplicate key '{dotted}' (first given on line {lines[key]})"
                    )
                lines[key] = k.start_mark.line + 1
                walk(v, key)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[(*path, i)] = item.start_mark.line + 1
                walk(item, (*path, i))

    root = _compose(text, where)
    if root is not None:
        walk(root, ())
    return lines


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The section model that holds the field at `loc` (None if it cannot be followed)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            continue
        field = current.model_fields.get(part)
        if field is None:
            return None if part not in ("phases",) else current
        current = _first_model(field.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _first_model(annotation: Any) -> Any:
    """The first BaseModel class inside an annotation (Optional[X], list[X], ...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _first_model(arg)
        if found is not None:
            return found
    return None


def _format_error(err: dict, lines: dict[tuple, int], where: str) -> str:
    raw = tuple(err["loc"])
    last = len(raw) - 1 if err["type"] == "extra_forbidden" else -1  # an unknown key is never a union tag
    loc = tuple(
        p
        for i, p in enumerate(raw)
        if i == last or not (isinstance(p, str) and (p in _TAGS or p.startswith(_TAG_PREFIXES)))
    )
    dotted = ".".join(str(p) for p in loc) or "(top level)"
    line = None
    for n in range(len(loc), 0, -1):
        if loc[:n] in lines:
            line = lines[loc[:n]]
            break
    place = f"{where}:{line}" if line else where
    if err["type"] == "extra_forbidden":
        parent = _model_at(PipelineConfig, loc[:-1])
        valid = sorted(parent.model_fields) if parent else []
        valid = [v for v in valid if v != "source"]
        hint = did_you_mean(str(loc[-1]), valid)
        return f"{place}: unknown key '{dotted}'; {hint}valid keys here: {', '.join(valid)}"
    if err["type"] == "missing":
        return f"{place}: missing required key '{dotted}'"
    msg = err["msg"].removeprefix("Value error, ")
    got = err.get("input")
    shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
    sub, sep, rest = msg.partition(": ")  # a section's check that names a key inside it: `space.lr: ...`
    deeper = {".".join(map(str, k)): n for k, n in lines.items()}.get(f"{dotted}.{sub}") if sep else None
    if deeper is not None:
        return f"{where}:{deeper}: {dotted}.{sub}: {rest}{shown}"
    return f"{place}: {dotted}: {msg}{shown}"


_TAGS = {
    "constant",
    "linear",
    "cosine",
    "phases",
    "adaptive",
    "float",
    "function-after[_positive_temperature(), union[...]]",
}
_TAG_PREFIXES = ("tagged-union[", "constrained-", "function-after[")


def _relevant(errors: list) -> list:
    """Errors worth showing first: unknown keys (a typo also makes its key "missing", and the unknown-key
    error names the nearest valid key), without the "a number" branch of a number-or-schedule field given a mapping."""
    kept = [e for e in errors if not (e["type"] == "float_type" and isinstance(e.get("input"), dict))] or errors
    return sorted(kept, key=lambda e: e["type"] != "extra_forbidden")


def is_weights_file(weights: str) -> bool:
    """A `weights:` value that names a file (not an enum or timm tag)."""
    return "/" in weights or "\\" in weights or weights.endswith((".pt", ".pth", ".bin", ".safetensors"))


def _resolve_paths(cfg: PipelineConfig, base: Path) -> None:
    def fix(p: Path | None) -> Path | None:
        if p is None:
            return None
        p = p.expanduser()
        return p if p.is_absolute() else (base / p).resolve()

    cfg.data.root = fix(cfg.data.root)
    cfg.teacher.checkpoint = fix(cfg.teacher.checkpoint)
    cfg.student.init_checkpoint = fix(cfg.student.init_checkpoint)
    for section in (cfg.teacher, cfg.student):
        if section.weights and is_weights_file(section.weights):
            section.weights = str(fix(Path(section.weights)))
    if cfg.run_dir is not None:
        cfg.run_dir = fix(cfg.run_dir)


def parse_pipeline(
    data: Any, where: str = "pipeline.yaml", text: str | None = None, base: Path | None = None
) -> PipelineConfig:
    """Validate an already-loaded YAML document; errors become one-line EdgekdErrors."""
    if not isinstance(data, dict):
        got = "an empty document" if data is None else type(data).__name__
        raise EdgekdError(f"{where}: expected a mapping of sections (name, data, teacher, student, ...), got {got}")
    lines = _key_lines(text, where) if text else {}
    try:
        cfg = PipelineConfig.model_validate(data)
    except ValidationError as e:
        errors = _relevant(e.errors())
        first = _format_error(errors[0], lines, where)
        more = f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
        raise EdgekdError(first + more) from None
    if base is not None:
        _resolve_paths(cfg, base)
    return cfg


def load_pipeline(path: str | Path) -> PipelineConfig:
    """Read, validate and resolve a pipeline.yaml."""
    path = Path(path)
    text, data = read_config(path, "pipeline file")
    if isinstance(data, dict) and "name" not in data:
        data = {"name": path.stem, **data}
    cfg = parse_pipeline(data, where=str(path), text=text, base=path.parent.resolve())
    cfg.source = path.resolve()
    return cfg
