"""docs/jetson.md's table of what each TensorRT release does with each precision and DLA combination is the code's
plan (trt_options.build_plan, validate_options), cell by cell, up to the first " — " (the rest is commentary)."""

from pathlib import Path

import pytest

from edgekd.ondevice.catalog import ENGINE_PRECISIONS
from edgekd.ondevice.trt_options import BuildOptions, build_plan, validate_options

DOC = Path(__file__).resolve().parents[2] / "docs" / "jetson.md"
COLUMNS = {"TensorRT 8.5": "8.5.2", "TensorRT 10.x": "10.3.0", "TensorRT 11.x": "11.1.0"}
SOURCES = {"fp32": "fp32 ONNX", "fp16": "fp16 ONNX", "qdq": "Q/DQ ONNX"}


def doc_table() -> tuple[list[str], list[list[str]]]:
    """(header cells, rows of cells) of the table after "How each engine is built"."""
    text = DOC.read_text().split("How each engine is built", 1)[1]
    lines = [line for line in text.split("\n\n", 2)[1].splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split(" | ")] for line in lines]
    return cells[0], cells[2:]


def planned(opts: BuildOptions, version: str) -> str:
    """The cell the code's plan gives, in the table's words."""
    plan = build_plan(opts, version)
    if validate_options(opts) or plan.refused:
        return "refused"
    parts = ["strongly typed" if plan.strongly_typed else "weakly typed", SOURCES[plan.source]]
    if plan.flags:
        parts.append("flags " + " ".join(f"`{flag}`" for flag in plan.flags))
    if plan.calibrate:
        parts.append("calibrator")
    return ", ".join(parts)


def options(key: str) -> BuildOptions:
    """`int8, GPU, calibrated` -> the BuildOptions of that row."""
    precision, where, *rest = key.split(" (")[0].split(", ")
    dla = {"GPU": None, "DLA": 0}[where]
    return BuildOptions(precision, dla_core=dla, static_shapes=dla is not None, calibrated=rest == ["calibrated"])


def test_the_table_has_every_precision_on_the_gpu_and_the_dla_and_the_calibrated_fallback():
    header, rows = doc_table()
    assert header[1:] == list(COLUMNS)
    keys = {row[0].split(" (")[0] for row in rows}
    expected = {f"{p}, {where}" for p in ENGINE_PRECISIONS for where in ("GPU", "DLA")} | {"int8, GPU, calibrated"}
    assert keys == expected


@pytest.mark.parametrize("column", list(COLUMNS))
def test_each_cell_says_what_the_code_builds(column):
    header, rows = doc_table()
    index = header.index(column)
    wrong = []
    for row in rows:
        said = row[index].split(" — ")[0].replace("**", "").strip()
        code = planned(options(row[0]), COLUMNS[column])
        if said != code:
            wrong.append(f"{row[0]} on {column}: the doc says {said!r}, the code plans {code!r}")
    assert wrong == []
