"""The generated YAML reference: docs/reference.md is current, and the renderer says what the models say."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from edgekd import config
from edgekd.reference import REGENERATE, render, render_document

ROOT = Path(__file__).resolve().parents[1]


class _S(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Inner(_S):
    """An inner section.

    Only the first paragraph is shown."""

    size: int = Field(3, ge=1, le=9, description="Size | in pixels, under runs/<name>.")


class Base(_S):
    lr: float = Field(0.1, gt=0, description="Learning rate.")


class Child(Base):
    """Overrides `lr` without a description."""

    lr: float = Field(0.5, gt=0)
    inner: Inner = Field(default_factory=Inner)


class Fixed(_S):
    kind: Literal["fixed"] = "fixed"
    value: float


class Ramp(_S):
    kind: Literal["ramp"]
    start: float
    end: float


class Root(_S):
    """A whole test.yaml."""

    name: str = Field(..., pattern=r"^[a-z]+$", description="A name.")
    limit: int | None = Field(None, ge=1, description="At most this many.")
    mode: Literal["a", "b"] = Field("a", description="A mode.")
    sizes: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [1, 8], description="Sizes.")
    child: Child = Field(default_factory=Child)
    items: list[Inner] = Field(default_factory=list)
    schedule: float | Annotated[Fixed | Ramp, Field(discriminator="kind")] = Field(
        1.0, description="Number or schedule."
    )
    other: float | Annotated[Fixed | Ramp, Field(discriminator="kind")] = 2.0
    source: Path | None = Field(None, exclude=True, description="Set by the loader.")


def _rows(lines: list[str]) -> dict[str, list[str]]:
    """Table rows by key of the section whose heading is the last one before them (heading -> rows)."""
    tables: dict[str, list[str]] = {}
    heading = None
    for line in lines:
        if line.startswith("### "):
            heading = line[4:]
            tables[heading] = []
        elif line.startswith("| `") and heading is not None:
            tables[heading].append(line)
    return tables


def test_docs_reference_is_current():
    committed = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
    assert committed == render(), f"docs/reference.md is out of date with edgekd/config/; regenerate it: {REGENERATE}"


def test_module_prints_the_reference():
    result = subprocess.run(
        [sys.executable, "-m", "edgekd.reference"], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert result.stdout == render()


def test_every_section_and_key_of_the_config_appears():
    text = render()
    for model in (
        config.PipelineConfig,
        config.DataConfig,
        config.DistillConfig,
        config.FeaturePair,
        config.BenchmarkConfig,
    ):
        for name, info in model.model_fields.items():
            assert (f"| `{name}` |" in text) != bool(info.exclude), f"{model.__name__}.{name}"
    assert "## pipeline.yaml" in text
    if hasattr(config, "DevicesConfig"):
        assert "## devices.yaml" in text and "### `devices.<name>`" in text


def test_rendered_rows_carry_type_default_and_description():
    lines = render_document("test.yaml", Root, "A test file.")
    tables = _rows(lines)
    top = tables["Top level"]
    assert "| `name` | string (matching `^[a-z]+$`) | **required** | A name. |" in top
    assert "| `limit` | int ≥ 1 or null | `null` | At most this many. |" in top
    assert '| `mode` | `a` \\| `b` | `"a"` | A mode. |' in top
    assert "| `sizes` | list of int ≥ 1 | `[1, 8]` | Sizes. |" in top
    assert not any(row.startswith("| `source`") for row in top), "fields the loader sets are not YAML keys"
    # a section field without a description of its own is described by the section's docstring
    assert (
        "| `child` | [section](#test-child) | the section's defaults | Overrides `lr` without a description. |" in top
    )
    # an inherited field keeps its parent's description when an override drops it
    assert "| `lr` | float > 0 | `0.5` | Learning rate. |" in tables["`child`"]
    # pipes are escaped, `<name>` outside code survives as text, and only a docstring's first paragraph shows
    assert "| `size` | int ≥ 1, ≤ 9 | `3` | Size \\| in pixels, under runs/&lt;name>. |" in tables["`child.inner`"]
    assert "An inner section." in lines and not any("Only the first paragraph" in line for line in lines)


def test_shared_and_discriminated_sections_render_once_with_unique_anchors():
    lines = render_document("test.yaml", Root, "A test file.")
    tables = _rows(lines)
    # Inner is met at child.inner and items[]: one table, which names the other place
    assert "`items[]`" not in " ".join(tables)
    assert "The same keys at `items[]`." in lines
    # each member of the schedule union gets its own section, linked from the field by its `kind`
    assert set(tables) >= {"`schedule` with `kind: fixed`", "`schedule` with `kind: ramp`"}
    assert "The same keys at `other`." in lines
    row = next(r for r in tables["Top level"] if r.startswith("| `schedule`"))
    assert (
        "float or a section with `kind:` [`fixed`](#test-schedule-kind-fixed), [`ramp`](#test-schedule-kind-ramp)"
        in row
    )
    anchors = [line for line in lines if line.startswith("<a id=")]
    assert len(anchors) == len(set(anchors)) == len(tables)
    for target in ("test-schedule-kind-fixed", "test-child-inner", "test-child"):
        assert f'<a id="{target}"></a>' in anchors
