"""The bench record's reader: the rows of a given ONNX file carry that file's name, a run's rows none."""

import pytest

from edgekd.ondevice.records import BENCH_SCHEMA, BenchDoc, RecordError


def doc(*artifacts: dict) -> dict:
    return {
        "schema": BENCH_SCHEMA,
        "device": "local",
        "kind": "host",
        "created": "2025-01-01T00:00:00Z",
        "reference": "onnx_file",
        "artifacts": list(artifacts),
    }


def test_one_row_per_file_and_id():
    read = BenchDoc.from_dict(
        doc(
            {"id": "onnx_file", "status": "done", "path": "models/a.onnx", "name": "a"},
            {"id": "onnx_file", "status": "done", "path": "models/b.onnx", "name": "b"},
        )
    )
    assert [a.key for a in read.artifacts] == ["a/onnx_file", "b/onnx_file"]
    assert read.get("onnx_file", "a").path == "models/a.onnx"


@pytest.mark.parametrize(
    "artifacts, says",
    [
        ([{"id": "onnx_file", "status": "done", "path": "models/a.onnx"}], r"\[onnx_file\].name: None"),
        ([{"id": "onnx_file", "status": "done", "path": "x", "name": "../a"}], r"\[onnx_file\].name: '../a'"),
        ([{"id": "student_onnx", "status": "done", "path": "x", "name": "a"}], r"\[student_onnx\].name: 'a'"),
        ([{"id": "onnx_file", "status": "done", "path": "x", "name": "a"}] * 2, "appears twice"),
    ],
    ids=["file-row-unnamed", "name-a-path", "run-row-named", "twice"],
)
def test_a_bad_name_is_named(artifacts, says):
    with pytest.raises(RecordError, match=says):
        BenchDoc.from_dict(doc(*artifacts))
