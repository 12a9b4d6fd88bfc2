"""The YAML reference (docs/reference.md), generated from the pydantic models in edgekd/config/.

    python -m edgekd.reference > docs/reference.md

Each document (pipeline.yaml, devices.yaml) is walked from its root model, depth first in field
order; every section model gets one table of key, type, default and description. A model met at
several places (the schedules, for instance) is rendered once, at the first, and lists the others.
"""

from __future__ import annotations

import inspect
import json
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from edgekd import config

# (file name, name of its root model in edgekd.config, what the file is); models not defined are left out.
DOCUMENTS = (
    ("pipeline.yaml", "PipelineConfig", "One pipeline: data, models, and what each stage does."),
    ("devices.yaml", "DevicesConfig", "The edge devices that `edgekd ship` reaches over SSH."),
)

REGENERATE = "python -m edgekd.reference > docs/reference.md"

_SIMPLE = {int: "int", float: "float", str: "string", bool: "bool", Path: "path", type(None): "null"}


@dataclass
class _Section:
    model: type[BaseModel]
    document: str
    paths: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        """`distill.temperature` with `kind: linear`, or Top level."""
        where = f"`{self.paths[0]}`" if self.paths[0] else "Top level"
        tag = _discriminator(self.model)
        return f"{where} with `{tag[0]}: {tag[1]}`" if tag else where

    @property
    def anchor(self) -> str:
        """A unique HTML id: `devices.yaml`, `devices.<name>.tensorrt` -> `devices-devices-name-tensorrt`."""
        tag = _discriminator(self.model) or ()
        words = [Path(self.document).stem, self.paths[0] or "top level", *map(str, tag)]
        return re.sub(r"[^a-z0-9]+", "-", " ".join(words).lower()).strip("-")


def _strip_annotated(tp: Any) -> tuple[Any, list]:
    """The bare type inside Annotated[...] and the constraints found on the way."""
    constraints: list = []
    while typing.get_origin(tp) is Annotated:
        tp, *meta = typing.get_args(tp)
        for m in meta:
            constraints.extend(m.metadata if isinstance(m, FieldInfo) else [m])
    return tp, constraints


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


_BOUND_ORDER = (annotated_types.Ge, annotated_types.Gt, annotated_types.Le, annotated_types.Lt)


def _constraint_text(constraints: list) -> str:
    """`≥ 0, < 1`: lower bounds, upper bounds, then lengths and patterns."""
    rank = {kind: i for i, kind in enumerate(_BOUND_ORDER)}
    parts = []
    for c in sorted(constraints, key=lambda c: rank.get(type(c), len(rank))):
        if isinstance(c, annotated_types.Ge):
            parts.append(f"≥ {c.ge}")
        elif isinstance(c, annotated_types.Gt):
            parts.append(f"> {c.gt}")
        elif isinstance(c, annotated_types.Le):
            parts.append(f"≤ {c.le}")
        elif isinstance(c, annotated_types.Lt):
            parts.append(f"< {c.lt}")
        elif isinstance(c, annotated_types.MinLen) and c.min_length > 0:
            parts.append(f"at least {c.min_length} item{'s' if c.min_length > 1 else ''}")
        elif isinstance(c, annotated_types.MaxLen):
            parts.append(f"at most {c.max_length} items")
        elif getattr(c, "pattern", None):
            parts.append(f"matching `{c.pattern}`")
    return ", ".join(parts)


def _literal_value(value: Any) -> str:
    return f"`{value.value if isinstance(value, Enum) else value}`"


def _discriminator(model: type[BaseModel]) -> tuple[str, Any] | None:
    """(key, value) of a field that can hold one value only, like `kind: linear`, which tells union members apart."""
    for name, info in model.model_fields.items():
        args = typing.get_args(info.annotation) if typing.get_origin(info.annotation) is Literal else ()
        if len(args) == 1:
            return name, args[0]
    return None


class _Walker:
    """Collects the sections of one document and renders type strings that link to them."""

    def __init__(self, document: str) -> None:
        self.document = document
        self.sections: dict[type[BaseModel], _Section] = {}

    def visit(self, model: type[BaseModel], path: str) -> None:
        if model in self.sections:
            if path not in self.sections[model].paths:
                self.sections[model].paths.append(path)
            return
        self.sections[model] = _Section(model, self.document, [path])
        for name, info in _fields(model):
            self._visit_type(info.annotation, _join(path, name))

    def _visit_type(self, tp: Any, path: str) -> None:
        tp, _ = _strip_annotated(tp)
        origin = typing.get_origin(tp)
        if _is_model(tp):
            self.visit(tp, path)
        elif _is_union(tp):
            for arg in typing.get_args(tp):
                self._visit_type(arg, path)
        elif origin in (list, tuple, set, frozenset):
            for arg in typing.get_args(tp):
                if arg is not Ellipsis:
                    self._visit_type(arg, f"{path}[]")
        elif origin is dict:
            self._visit_type(typing.get_args(tp)[1], f"{path}.<name>")

    def type_text(self, tp: Any, constraints: list = ()) -> str:
        tp, inner = _strip_annotated(tp)
        limits = _constraint_text([*inner, *constraints])
        origin = typing.get_origin(tp)
        if _is_model(tp):
            return f"[section](#{self.sections[tp].anchor})"
        if _is_union(tp):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            models = [_strip_annotated(a)[0] for a in args]
            tags = [_discriminator(m) if _is_model(m) else None for m in models]
            if len(args) > 1 and all(tags) and len({t[0] for t in tags}) == 1:  # a discriminated union of sections
                links = ", ".join(f"[`{t[1]}`](#{self.sections[m].anchor})" for m, t in zip(models, tags))
                text = f"a section with `{tags[0][0]}:` {links}"
            elif len(args) == 1:  # Optional[X]: the field's own constraints apply to X
                text = self.type_text(args[0], constraints)
            else:
                text = " or ".join(self.type_text(a) for a in args)
            return f"{text} or null" if len(args) < len(typing.get_args(tp)) else text
        if origin is Literal:
            return " | ".join(_literal_value(v) for v in typing.get_args(tp))
        if origin in (list, tuple, set, frozenset):
            (item, *_) = typing.get_args(tp) or (Any,)
            text = f"list of {self.type_text(item)}"
            return f"{text} ({limits})" if limits else text
        if origin is dict:
            key, value = typing.get_args(tp)
            key_limits = _constraint_text(_strip_annotated(key)[1])
            name = f"name ({key_limits})" if key_limits else "name"
            return f"mapping of {name} to {self.type_text(value)}"
        text = _SIMPLE.get(tp, getattr(tp, "__name__", str(tp)))
        return f"{text} {limits}" if limits and limits[0] in "≥>≤<" else f"{text} ({limits})" if limits else text


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _fields(model: type[BaseModel]) -> list[tuple[str, FieldInfo]]:
    """The YAML keys of a model: its fields less those the loader sets (exclude=True)."""
    return [(name, info) for name, info in model.model_fields.items() if not info.exclude]


def _description(model: type[BaseModel], name: str) -> str:
    """The field's description; else the one it had in a parent model (an override dropped it);
    else, for a field that holds one section, that section's docstring."""
    for cls in model.__mro__:
        info = getattr(cls, "model_fields", {}).get(name) if _is_model(cls) else None
        if info is not None and info.description:
            return info.description
    tp, _ = _strip_annotated(model.model_fields[name].annotation)
    members = [_strip_annotated(a)[0] for a in typing.get_args(tp)] if _is_union(tp) else [tp]
    sections = [m for m in members if _is_model(m)]
    return _docstring(sections[0]) if len(sections) == 1 else ""


def _default_text(info: FieldInfo) -> str:
    if info.is_required():
        return "**required**"
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    if "inherits" in extra:
        return f"`{extra['inherits']}`"
    value = info.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "the section's defaults"
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, Enum):
        value = value.value
    return f"`{json.dumps(value, ensure_ascii=False)}`"


def _cell(text: str) -> str:
    """Text fit for a table cell: one line, pipes escaped, and a tag-like `<` outside code spans as
    `&lt;` (runs/<name> would otherwise vanish as an HTML tag)."""
    parts = " ".join(text.split()).split("`")
    parts[::2] = [re.sub(r"<(?=[A-Za-z/!?])", "&lt;", p) for p in parts[::2]]
    return "`".join(parts).replace("|", "\\|")


def _docstring(model: type[BaseModel]) -> str:
    doc = model.__dict__.get("__doc__")
    return inspect.cleandoc(doc).split("\n\n")[0] if doc else ""


def _render_section(walker: _Walker, section: _Section) -> list[str]:
    model = section.model
    lines = [f'<a id="{section.anchor}"></a>', "", f"### {section.title}", ""]
    doc = _docstring(model)
    if doc:
        lines += [" ".join(doc.split()), ""]
    if len(section.paths) > 1:
        lines += ["The same keys at " + ", ".join(f"`{p}`" for p in section.paths[1:]) + ".", ""]
    fields = _fields(model)
    if not fields:
        return [*lines, "(No keys.)", ""]
    lines += ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    for name, info in fields:
        type_text = walker.type_text(info.annotation, info.metadata)
        lines.append(
            f"| `{name}` | {_cell(type_text)} | {_cell(_default_text(info))} | {_cell(_description(model, name))} |"
        )
    return [*lines, ""]


def render() -> str:
    """docs/reference.md as it should be for the models in edgekd/config/ now."""
    out = [
        "# Configuration reference",
        "",
        f"<!-- Generated from edgekd/config/ by `{REGENERATE}`; do not edit by hand. -->",
        "",
        "Unknown keys are errors (the message names the nearest valid key). Relative paths resolve against the YAML file's folder.",
        "",
    ]
    for file_name, model_name, about in DOCUMENTS:
        root = getattr(config, model_name, None)
        if root is not None:
            out += render_document(file_name, root, about)
    return "\n".join(out).rstrip("\n") + "\n"


def render_document(file_name: str, root: type[BaseModel], about: str) -> list[str]:
    """The Markdown lines for one YAML file whose top level is `root`: a heading, then one table per section."""
    walker = _Walker(file_name)
    walker.visit(root, "")
    out = [f"## {file_name}", "", about, ""]
    for section in walker.sections.values():
        out += _render_section(walker, section)
    return out


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
