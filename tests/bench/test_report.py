"""The report: a typed model built from real bench records and a manifest, rendered to JSON, Markdown and HTML."""

import json
import re
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text

from edgekd.artifacts import write_json_atomic
from edgekd.config import BudgetConfig
from edgekd.errors import EdgekdError
from edgekd.ondevice import catalog
from edgekd.ondevice.records import Accuracy, ArtifactRecord, BenchDoc, Latency, RuntimeInfo
from edgekd.report import write_report
from edgekd.report.build import pareto_front
from edgekd.report.load import load_bench
from edgekd.report.plots import place_labels

EMOJI = re.compile("[\U0001f000-\U0001faff\u2600-\u27bf\u2b50\u2705\u274c\ufe0f]")
BATCHES = (1, 4)


def measure(
    path: Path, art_id: str, images: np.ndarray, labels: np.ndarray, teacher_logits: np.ndarray
) -> ArtifactRecord:
    """A record of a real ONNX Runtime session: accuracy on `images`, latency at BATCHES (1 thread, 2 rounds)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    logits = sess.run(None, {"input": images})[0]
    p = np.exp(teacher_logits - teacher_logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    q = np.exp(logits - logits.max(1, keepdims=True))
    q /= q.sum(1, keepdims=True)
    acc = Accuracy(
        n=len(labels),
        top1=float((logits.argmax(1) == labels).mean() * 100),
        top5=float((np.argsort(-logits, 1)[:, :5] == labels[:, None]).any(1).mean() * 100),
        agreement=float((logits.argmax(1) == teacher_logits.argmax(1)).mean() * 100),
        kl=float((p * (np.log(p) - np.log(q))).sum(1).mean()),
    )
    latency = []
    for bs in BATCHES:
        batch = np.ascontiguousarray(images[:bs])
        rounds = []
        for _ in range(2):
            times = []
            for _ in range(15):
                t0 = time.perf_counter()
                sess.run(None, {"input": batch})
                times.append((time.perf_counter() - t0) * 1000)
            rounds.append(times)
        flat = np.concatenate(rounds)
        medians = [float(np.median(r)) for r in rounds]
        p50 = float(np.median(flat))
        latency.append(
            Latency(
                bs, len(flat), p50, float(np.percentile(flat, 90)), float(np.percentile(flat, 99)), float(flat.mean()),
                float(flat.std()), float(flat.min()), float(flat.max()), bs * 1000 / p50, medians,
                (max(medians) - min(medians)) / np.mean(medians),
            )
        )  # fmt: skip
    return ArtifactRecord(
        id=art_id,
        status="done",
        path=catalog.path_of(art_id),
        size_bytes=path.stat().st_size,
        runtime=RuntimeInfo("onnxruntime", ort.__version__, "CPUExecutionProvider", 1),
        latency=latency,
        accuracy=acc,
    )


@pytest.fixture(scope="module")
def measured(tmp_path_factory, build_tiny_onnx):
    """Real records of tiny ONNX models standing in for the teacher, the student and two int8 students."""
    root = tmp_path_factory.mktemp("models")
    images = np.random.default_rng(2).normal(size=(24, 1, 8, 8)).astype(np.float32)
    teacher = build_tiny_onnx(root / "teacher.onnx", seed=0)
    sess = ort.InferenceSession(str(teacher), providers=["CPUExecutionProvider"])
    teacher_logits = sess.run(None, {"input": images})[0]
    labels = teacher_logits.argmax(1)
    labels[:3] = (labels[:3] + 1) % 10  # the teacher is right on 21 of 24
    ids = {"teacher_onnx": 0, "student_onnx": 1, "student_qat_onnx": 2, "student_dynamic_int8_onnx": 3}
    return {
        art_id: measure(build_tiny_onnx(root / f"{art_id}.onnx", seed=seed), art_id, images, labels, teacher_logits)
        for art_id, seed in ids.items()
    }


def bench(device: str, kind: str, records: list[ArtifactRecord]) -> BenchDoc:
    return BenchDoc(
        device=device,
        kind=kind,
        created="2026-11-23T18:30:00Z",
        reference=catalog.REFERENCE,
        system={"cpu": "test cpu", "cores": 2, "memory_gb": 8.0, "os": "Linux", "python": "3.11"},
        settings={"batch_sizes": list(BATCHES), "warmup": 1, "min_runs": 15, "repeats": 2, "threads": 1},
        artifacts=records,
    )


def write_bench(run: Path, doc: BenchDoc) -> None:
    doc = BenchDoc.from_dict(json.loads(json.dumps(doc.to_dict())))  # the file must pass the one reader
    write_json_atomic(run / "bench" / f"{doc.device}.json", doc.to_dict())


def stage(status: str, **metrics) -> dict:
    return {"status": status, "seconds": 1.5, "reason": None, "error": None, "artifacts": {}, "metrics": metrics}


def manifest(run: Path, **stages) -> None:
    write_json_atomic(run / "manifest.json", {"pipeline": "quickstart", "stages": stages})


def html_summary(page: str) -> str:
    """The HTML before the first detail section."""
    return page[: page.index("<h2>Side by side") if "<h2>Side by side" in page else page.index("<h2>Device")]


def md_table(md: str, heading: str) -> list[list[str]]:
    """The cells of the first table after `heading` in report.md (header row first)."""
    lines = md[md.index(heading) :].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| "))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        if not line.startswith("|---"):
            rows.append([c.strip() for c in line.strip("|").split(" | ")])
    return rows


def test_host_and_device_side_by_side_from_measured_records(measured, tmp_path: Path) -> None:
    run = tmp_path / "quickstart"
    host = list(measured.values()) + [
        ArtifactRecord("student_ptq_onnx", "failed", "qat/student_ptq_int8_qdq.onnx", reason="InvalidGraph: bad Q/DQ"),
        ArtifactRecord("student_trt_fp16", "skipped", "tensorrt/local/student_trt_fp16.engine", reason="no TensorRT"),
    ]
    write_bench(run, bench("local", "host", host))
    write_bench(run, bench("xavier", "jetson-xavier-nx", [measured["student_onnx"], measured["teacher_onnx"]]))
    (run / "distill").mkdir()
    (run / "distill" / "metrics.jsonl").write_text(
        "".join(json.dumps({"epoch": e, "val_top1": 60 + 10 * e, "val_kl": 1 / (e + 1)}) + "\n" for e in range(3))
    )
    manifest(
        run,
        distill=stage("done", val_top1=97.5),
        baseline=stage("cached", val_top1=95.25),
        tensorrt={**stage("skipped"), "reason": "TensorRT is not installed here"},
        report={"status": "running", "artifacts": {}, "metrics": {}},
    )
    files = write_report([run], run / "report", BudgetConfig(), omit_stage="report")
    doc = json.loads(files.json.read_text())
    md, page = files.markdown.read_text(), files.html.read_text()

    assert doc["schema"] == "edgekd.report/3" and doc["reference"] == catalog.REFERENCE
    for section, records in zip(doc["devices"], (host, [measured["student_onnx"], measured["teacher_onnx"]])):
        ids = [r["id"] for r in section["rows"]]
        assert sorted(ids) == sorted(r.id for r in records) and len(set(ids)) == len(ids)
        assert ids[0] == catalog.REFERENCE
        ref = next(r for r in section["rows"] if r["id"] == catalog.REFERENCE)
        assert [f["speedup"] for f in ref["latency"]] == pytest.approx([1.0, 1.0])
    # one named reference, stated before any figure, the same for both devices
    header = md[: md.index("| Device")]
    assert f"`{catalog.REFERENCE}`" in header and f"Speed-up vs {catalog.REFERENCE}" in md
    assert md.count("(reference)") == 2
    # side by side: one row per artifact id, one column per device
    side = md_table(md, "## Side by side")
    assert side[0] == ["Artifact", "local", "xavier"]
    assert sorted(r[0] for r in side[1:]) == sorted(r.id for r in host)
    # threads are numbers
    latency_table = md_table(md, "### Latency")
    threads = [row[2] for row in latency_table[1:]]
    assert latency_table[0][2] == "Threads" and set(threads) == {"1", "—"} and "None" not in md
    # summary first: six columns at most, one row per device, skipped stages with their reason
    summary = html_summary(page)
    assert summary.count("<th>") <= 6 and summary.count("<tr>") == 1 + 2
    assert "tensorrt skipped: TensorRT is not installed here" in summary
    assert "FAILED: `student_ptq_onnx`: InvalidGraph: bad Q/DQ" in md and any(
        "student_ptq_onnx failed" in f for f in doc["failed"]
    )
    # what distillation bought, from the manifest's distill and baseline records
    assert doc["runs"][0]["kd"] == {"distilled_top1": 97.5, "baseline_top1": 95.25}
    assert "Distillation bought **+2.25 points**" in md
    # the running report stage is not listed; no emoji anywhere; marks are text or inline SVG
    assert [s["name"] for s in doc["runs"][0]["stages"]] == ["distill", "baseline", "tensorrt"]
    assert "running" not in md
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)
    assert not EMOJI.search(text) and not EMOJI.search(md)
    assert "<svg" in page and page.count("data:image/png;base64,") == 3  # two devices + curves
    assert not meets_budget_failures_hidden(doc)


def meets_budget_failures_hidden(doc: dict) -> bool:
    """A failed artifact fails the verdict (--strict) even when a student is within budget."""
    return doc["meets_budget"] and bool(doc["failed"])


def records(specs: dict[str, tuple[float, float]]) -> list[ArtifactRecord]:
    """Records with the given (top-1, p50 ms) per id: budget logic needs exact accuracies."""
    out = []
    for art_id, (top1, p50) in specs.items():
        lat = [
            Latency(bs, 10, p50 * bs, p50 * bs, p50 * bs, p50 * bs, 0, p50 * bs, p50 * bs, 1000 / p50) for bs in BATCHES
        ]
        rt = RuntimeInfo("onnxruntime", ort.__version__, "CPUExecutionProvider", 2)
        out.append(
            ArtifactRecord(
                art_id, "done", catalog.path_of(art_id), runtime=rt, latency=lat, accuracy=Accuracy(100, top1, 100)
            )
        )
    return out


def test_budget_marks_and_recommendation(tmp_path: Path) -> None:
    run = tmp_path / "run"
    specs = {
        "teacher_onnx": (92.0, 20.0),
        "student_onnx": (90.0, 4.0),
        "student_qat_onnx": (88.5, 1.0),  # 1.5 below the fp32 student: over (max 1)
        "student_dynamic_int8_onnx": (89.5, 2.0),  # within both
        "teacher": (92.0, 30.0),
    }
    write_bench(run, bench("local", "host", records(specs)))
    files = write_report([run], run / "report", BudgetConfig(max_drop_vs_teacher=3, max_drop_vs_student=1))
    section = files.report.devices[0]
    assert {r.id: r.budget for r in section.rows} == {
        "teacher_onnx": "within",
        "teacher": "within",
        "student_onnx": "within",
        "student_qat_onnx": "over",
        "student_dynamic_int8_onnx": "within",
    }
    assert "below fp32 student" in section.row("student_qat_onnx").budget_note
    assert section.recommendation == "student_dynamic_int8_onnx" and files.report.meets_budget
    best = section.row("student_dynamic_int8_onnx")
    assert best.at(1).speedup == pytest.approx(10.0) and best.top1_delta == pytest.approx(-2.5)
    assert files.report.summary[0].cost == pytest.approx(2.5)
    md = files.markdown.read_text()
    assert "**Recommendation on local:** `student_dynamic_int8_onnx`" in md
    assert "within, recommended" in md and "| over |" in md


def test_teacher_recommended_when_no_student_meets_the_budget(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_bench(run, bench("local", "host", records({"teacher_onnx": (92.0, 20.0), "student_onnx": (80.0, 4.0)})))
    files = write_report([run], run / "report", BudgetConfig())
    report = files.report
    assert report.recommendations == {"local": "teacher_onnx"} or report.recommendations == {
        "run/local": "teacher_onnx"
    }
    assert not report.meets_budget and "no student artifact within" in report.unmet[0]
    assert "keeps a teacher model" in files.markdown.read_text()
    assert json.loads(files.json.read_text())["meets_budget"] is False


def test_device_without_the_reference_says_so(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_bench(run, bench("local", "host", records({"teacher_onnx": (92.0, 20.0), "student_onnx": (91.0, 4.0)})))
    write_bench(run, bench("nano", "jetson-nano", records({"teacher": (92.0, 40.0), "student_onnx": (91.0, 8.0)})))
    files = write_report([run], run / "report", BudgetConfig())
    nano = next(d for d in files.report.devices if d.device == "nano")
    assert nano.reference_note and catalog.REFERENCE in nano.reference_note
    assert all(f.speedup is None for r in nano.rows for f in r.latency)  # no silent switch to `teacher`
    assert nano.teacher_top1 == 92.0 and "on local" in nano.teacher_top1_from
    assert f"Reference missing:** {catalog.REFERENCE} was not measured on nano" in files.markdown.read_text()
    assert "nano: " in html_summary(files.html.read_text())


def test_unstable_figures_carry_a_text_mark(tmp_path: Path) -> None:
    run = tmp_path / "run"
    recs = records({"teacher_onnx": (92.0, 20.0), "student_onnx": (91.0, 4.0)})
    recs[1].latency[0] = replace(recs[1].latency[0], stable=False, spread=0.31)
    write_bench(run, bench("local", "host", recs))
    files = write_report([run], run / "report", BudgetConfig())
    md = files.markdown.read_text()
    assert "4.00 / 4.00 †" in md and "student_onnx b1: rounds differ by 31%" in md
    assert "80.00 / 80.00 †" not in md  # batch 4 of the same artifact is stable


def test_sensitivity_rendered_when_the_qat_stage_wrote_it(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_bench(run, bench("local", "host", records({"teacher_onnx": (92.0, 20.0), "student_onnx": (91.0, 4.0)})))
    layers = [{"layer": "conv1", "top1": 90.1, "kl": 0.02}, {"layer": "layer3.0.conv2", "top1": 85.0, "kl": 0.3}]
    manifest(run, qat=stage("done", sensitivity=layers))
    files = write_report([run], run / "report", BudgetConfig())
    md = files.markdown.read_text()
    assert md.index("| layer3.0.conv2 |") < md.index("| conv1 |")  # most sensitive first
    assert (run / "report" / "sensitivity-run.png").is_file()
    manifest(run, qat=stage("done", sensitivity="not a list"))
    files = write_report([run], run / "report", BudgetConfig())
    assert "sensitivity" not in files.markdown.read_text().lower()


def test_a_failed_attempt_keeps_the_last_done_baseline(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_bench(run, bench("local", "host", records({"teacher_onnx": (92.0, 20.0), "student_onnx": (91.0, 4.0)})))
    failed = {"status": "failed", "error": "EdgekdError: disk full", "last_done": stage("done", val_top1=90.0)}
    manifest(run, distill=stage("done", val_top1=91.0), baseline=failed)
    report = write_report([run], run / "report", BudgetConfig()).report
    assert report.runs[0].kd.gain == pytest.approx(1.0)
    assert "baseline failed: EdgekdError: disk full" in report.skipped[0]


def test_labels_never_overlap_and_dropped_ones_are_named() -> None:
    fig = Figure(figsize=(4, 3), dpi=110)
    ax = fig.add_subplot()
    rng = np.random.default_rng(0)
    xs, ys = list(1 + rng.random(12) * 0.1), list(90 + rng.random(12) * 0.5)  # twelve points in one clump
    ax.scatter(xs, ys)
    ax.set(xlim=(0, 10), ylim=(0, 100))  # the twelve points fall within a few pixels of each other
    placed = place_labels(ax, xs, ys, [f"student_artifact_{i}" for i in range(12)])
    renderer = fig.canvas.get_renderer()
    for t in placed:
        if t is not None:
            t.update_positions(renderer)
    boxes = [Text.get_window_extent(t, renderer) for t in placed if t is not None]
    assert 0 < len(boxes) < 12  # the clump has room for some labels, not for all
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])


def test_wrong_schema_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text(json.dumps({"schema": "edgekd.bench/1"}))
    with pytest.raises(EdgekdError, match=r"x\.json: bench: schema 'edgekd.bench/1', expected 'edgekd.bench/2'"):
        load_bench(tmp_path / "x.json")


def test_pareto_front() -> None:
    #            fast+bad  mid+good  slow+best  slow+bad (dominated)  mid+worse (dominated)
    latencies = [1.0, 2.0, 5.0, 6.0, 2.5]
    accuracies = [80.0, 90.0, 95.0, 85.0, 89.0]
    assert pareto_front(latencies, accuracies) == [True, True, True, False, False]
    assert pareto_front([1.0, 1.0], [90.0, 90.0]) == [True, True]
