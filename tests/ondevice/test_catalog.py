"""The catalogue's counterparts: the row that holds for another model what a row holds for its own."""

import pytest

from edgekd.ondevice import catalog


@pytest.mark.parametrize(
    ("artifact", "model", "expected"),
    [
        ("student_trt_fp16", "teacher", "teacher_trt_fp16"),
        ("student_onnx", "teacher", "teacher_onnx"),
        ("teacher_onnx_fp16", "student", "student_onnx_fp16"),
        ("onnx_file_trt_fp16", "student", "student_trt_fp16"),  # built from the file's fp32 ONNX, as the student's
        ("onnx_file", "student", "student_onnx"),
        ("scout_onnx", "student", "student_onnx"),
        ("student", "baseline", "baseline_student"),
        ("student_qat_onnx", "teacher", None),  # no teacher is quantized
        ("student_trt_int8", "teacher", None),
        ("student_trt_int8", "file", None),  # the file's int8 engine is built from its Q/DQ copy, not its fp32 ONNX
        ("onnx_file_int8", "student", None),  # two candidates: the student's QAT and PTQ files
        ("onnx_file_trt_int8", "student", None),
        ("bench", "student", None),  # not a model
        ("student", "student", None),
    ],
)
def test_counterpart(artifact, model, expected):
    assert catalog.counterpart(artifact, model) == expected


def test_counterparts_hold_the_same_kind_of_file_and_pair_up():
    models = sorted({row.model for row in catalog.ARTIFACTS} - {"none"})
    pairs = [(row, catalog.counterpart(row.id, model)) for row in catalog.ARTIFACTS for model in models]
    pairs = [(row, other) for row, other in pairs if other is not None]
    assert len(pairs) >= 30
    for row, other in pairs:
        theirs = catalog.get(other)
        assert (theirs.runtime, theirs.precision) == (row.runtime, row.precision), (row.id, other)
        back = catalog.counterpart(other, row.model)
        assert back in (row.id, None), (row.id, other, back)  # None: several rows of row's model fit (QAT, PTQ)


def test_an_unknown_id_is_refused_with_the_valid_ones():
    with pytest.raises(KeyError, match="unknown artifact id 'student_trt_fp64'; valid ids: teacher, "):
        catalog.counterpart("student_trt_fp64", "teacher")
