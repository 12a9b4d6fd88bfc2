"""Dynamic int8 is scored at every benchmark batch size (its activation scales are per batch), and the report
shows each figure and which batch the table's figure used."""

import json

import numpy as np
import onnxruntime as ort
import pytest

from edgekd.config import BudgetConfig
from edgekd.ondevice import catalog
from edgekd.ondevice.files import write_json_atomic
from edgekd.ondevice.measure import Settings, Subject, bench_artifacts
from edgekd.ondevice.records import BenchDoc
from edgekd.quant.dynamic import quantize_dynamic_onnx
from edgekd.report import write_report
from edgekd.runtimes import open_runtime

SETTINGS = Settings(batch_sizes=(1, 4), warmup=1, min_runs=3, min_seconds=0.0, repeats=1, threads=1)


def _top1_in_chunks(path, images, labels, chunk: int) -> float:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    preds = np.concatenate(
        [sess.run(None, {"input": images[i : i + chunk]})[0].argmax(1) for i in range(0, len(images), chunk)]
    )
    return float((preds == labels).mean() * 100)


def test_dynamic_int8_top1_at_every_batch_size_in_the_bench_and_the_report(tmp_path, build_tiny_onnx):
    fp32 = build_tiny_onnx(tmp_path / "student.onnx", seed=3)
    dynamic = quantize_dynamic_onnx(fp32, tmp_path / "student_dynamic_int8.onnx")
    assert dynamic.status == "done"
    rng = np.random.default_rng(0)
    images = rng.normal(size=(64, 1, 8, 8)).astype(np.float32)
    images[::4] *= 50.0  # one image in four with large activations: a batch of 4 shares its scale with them
    sess = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    labels = sess.run(None, {"input": images})[0].argmax(1)  # the fp32 model's classes
    subjects = [
        Subject("student_onnx", "export/student.onnx", lambda: open_runtime(fp32, threads=1)),
        Subject(
            "student_dynamic_int8_onnx",
            "dq.onnx",
            lambda: open_runtime(tmp_path / "student_dynamic_int8.onnx", threads=1),
        ),
    ]
    records, conditions = bench_artifacts(subjects, images, labels, None, SETTINGS)
    plain, dyn = records
    assert plain.accuracy.batch_size == 4 and plain.accuracy.by_batch == []
    by_batch = {b.batch_size: b.top1 for b in dyn.accuracy.by_batch}
    assert set(by_batch) == {1, 4} and dyn.accuracy.batch_size == 4 and dyn.accuracy.top1 == by_batch[4]
    for bs in (1, 4):
        assert by_batch[bs] == pytest.approx(
            _top1_in_chunks(tmp_path / "student_dynamic_int8.onnx", images, labels, bs)
        )
    assert by_batch[1] != by_batch[4], "the data makes the per-batch scales matter"

    run = tmp_path / "run"
    doc = BenchDoc(
        "local",
        "host",
        "2026-12-07T00:00:00Z",
        catalog.REFERENCE,
        settings={"batch_sizes": [1, 4]},
        conditions=conditions,
        artifacts=records,
    )
    write_json_atomic(run / "bench" / "local.json", json.loads(json.dumps(doc.to_dict())))
    write_json_atomic(run / "manifest.json", {"pipeline": "p", "stages": {}})
    files = write_report([run], run / "report", BudgetConfig())
    md = files.markdown.read_text()
    line = (
        f"`student_dynamic_int8_onnx`: b1 {by_batch[1]:.2f}%, b4 {by_batch[4]:.2f}%; the table's figure is at batch 4"
    )
    assert line in md
    row = next(
        r for r in json.loads(files.json.read_text())["devices"][0]["rows"] if r["id"] == "student_dynamic_int8_onnx"
    )
    assert row["top1_by_batch"] == {"1": by_batch[1], "4": by_batch[4]} and row["top1_batch"] == 4
