"""The report: a typed model built from real bench records and a manifest, rendered to JSON, Markdown and HTML."""

import json
import re
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.text import Text

from edgekd.config import BudgetConfig
from edgekd.errors import EdgekdError
from edgekd.models import build_model
from edgekd.ondevice import catalog
from edgekd.ondevice.files import write_json_atomic
from edgekd.ondevice.records import Accuracy, ArtifactRecord, BenchDoc, Latency, RuntimeInfo
from edgekd.quant import calibrate_ptq
from edgekd.quant.sensitivity import sensitivity_record
from edgekd.report import write_report
from edgekd.report.build import mcnemar_p, pareto_front
from edgekd.report.plots import place_labels
from edgekd.run_records import ValOutcome
from edgekd.rundir import load_bench

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

    assert doc["schema"] == "edgekd.report/4" and doc["reference"] == catalog.REFERENCE
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
    kd = {"distilled_top1": 97.5, "baseline_top1": 95.25, "images": None, "gained": None, "lost": None}
    assert doc["runs"][0]["kd"] == {**kd, "p_value": None}  # records without val_correct: the figures alone
    assert "Distillation bought **+2.25 points**" in md and "Image by image" not in md
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
    torch.manual_seed(0)  # the record as the qat stage writes it, from the real producer
    student = build_model("resnet8", 10, 1).eval()
    images, labels = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    made, ranking = sensitivity_record(student, calibrate_ptq(student, [images]), images, labels, "max")
    record = made.to_dict()
    # a random model scores every layer alike: give them distinct scores, in the ranking's order
    for i, row in enumerate(reversed(record["layers"])):
        row["top1"], row["top1_gain"] = 80.0 + i, 10.0 + i
    record["fp32_top1"], record["int8_top1"] = 95.0, 70.0
    record["auto_keep_float"] = {"kept": [ranking[0].layer], "drop": 1.0, "budget": 2.0, "met": True}
    manifest(run, qat=stage("done", sensitivity=record))
    files = write_report([run], run / "report", BudgetConfig())
    md = files.markdown.read_text()
    rows = [md.index(f"| {r.layer} |") for r in ranking]
    assert len(ranking) > 1 and rows == sorted(rows)  # every layer, the highest top-1 when float first
    top = record["layers"][0]
    assert f"| {top['layer']} | {top['top1']:.2f} | +{top['top1'] - 70:.2f} |" in md
    assert "one layer alone left float" in md and "16 training images" in md and "(fp32 95.00%, all int8 70.00%)" in md
    assert f"Kept float by qat.auto_keep_float: {ranking[0].layer}." in md
    data = json.loads(files.json.read_text())
    assert [row["layer"] for row in data["runs"][0]["sensitivity"]["layers"]] == [r.layer for r in ranking]
    assert (run / "report" / "sensitivity-run.png").is_file()
    manifest(run, qat=stage("done", sensitivity="not a record"))  # the report reads records, it does not guess
    with pytest.raises(EdgekdError, match=r"stages\.qat\.metrics\.sensitivity: expected dict, got 'not a record'"):
        write_report([run], run / "report", BudgetConfig())


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


def with_power(recs: list[ArtifactRecord], watts: dict[str, float | None]) -> list[ArtifactRecord]:
    """Board power per artifact id as the harness records it (energy = W x mean ms / batch); None: no rails."""
    for rec in recs:
        w = watts.get(rec.id)
        rec.latency = [
            replace(lat, power_w=w, energy_mj=None if w is None else w * lat.mean_ms / lat.batch_size)
            for lat in rec.latency
        ]
    return recs


def latency_rows(md: str, device: str) -> dict[str, dict[str, str]]:
    """Artifact id -> {header: cell} of a device's latency table in report.md."""
    table = md_table(md[md.index(f"## Device {device} ") :], "### Latency")
    return {row[0].split(" ")[0]: dict(zip(table[0], row)) for row in table[1:]}


def test_energy_is_na_without_rails_and_plotted_when_every_point_has_it(tmp_path: Path) -> None:
    run = tmp_path / "run"
    specs = {"teacher_onnx": (92.0, 20.0), "student_onnx": (91.0, 4.0), "student_qat_onnx": (90.5, 2.0)}
    write_bench(run, bench("local", "host", records(specs)))  # a host: no power rails
    # on the Jetson the int8 student is fastest but draws so much power that the fp32 student costs less energy
    watts = {"teacher_onnx": 10.0, "student_onnx": 5.0, "student_qat_onnx": 12.0}
    write_bench(run, bench("orin", "jetson-orin-nano", with_power(records(specs), watts)))
    files = write_report([run], run / "report", BudgetConfig())
    md = files.markdown.read_text()

    host = latency_rows(md, "local")
    assert {row[h] for row in host.values() for h in ("b1 W", "b1 mJ/img", "b4 W", "b4 mJ/img")} == {"n/a"}
    orin = latency_rows(md, "orin")
    assert orin["student_onnx"]["b1 W"] == "5.00" and orin["student_onnx"]["b1 mJ/img"] == "20.0"  # 5 W x 4 ms
    assert orin["teacher_onnx"]["b4 mJ/img"] == "200"  # 10 W x 80 ms / 4 images
    assert orin["student_qat_onnx"]["b1 mJ/img"] == "24.0"
    assert not any(re.fullmatch(r"0(\.0+)?", cell) for row in [*host.values(), *orin.values()] for cell in row.values())
    assert not any("img/s" in header for header in host["teacher_onnx"])  # kept narrow: throughput is in the JSON

    orin_section = next(d for d in files.report.devices if d.device == "orin")
    local_section = next(d for d in files.report.devices if d.device == "local")
    assert orin_section.energy and not local_section.energy
    front = {r.id: (r.pareto, r.pareto_energy) for r in orin_section.rows}
    assert front["student_qat_onnx"] == (True, False)  # fastest, but not the least energy per image
    assert front["student_onnx"] == (True, True)
    assert (run / "report" / "accuracy-energy-orin.png").is_file()
    assert not (run / "report" / "accuracy-energy-local.png").exists()
    assert "![accuracy vs energy per image on orin](accuracy-energy-orin.png)" in md

    # one artifact without a power figure: its cells say n/a and no device-wide energy plot is drawn
    watts["student_qat_onnx"] = None
    write_bench(run, bench("orin", "jetson-orin-nano", with_power(records(specs), watts)))
    files = write_report([run], tmp_path / "again", BudgetConfig())
    assert latency_rows(files.markdown.read_text(), "orin")["student_qat_onnx"]["b1 W"] == "n/a"
    assert not next(d for d in files.report.devices if d.device == "orin").energy
    assert not (tmp_path / "again" / "accuracy-energy-orin.png").exists()


SHOW_UNLOCKED = """cpu0: Online=1 Governor=schedutil MinFreq=1190400 MaxFreq=2265600 CurrentFreq=1190400 IdleStates: C1=1
GPU MinFreq=114750000 MaxFreq=1377000000 CurrentFreq=114750000
EMC MinFreq=204000000 MaxFreq=2133000000 CurrentFreq=2133000000 FreqOverride=0
"""
SHOW_LOCKED = """cpu0: Online=1 Governor=schedutil MinFreq=2265600 MaxFreq=2265600 CurrentFreq=2265600 IdleStates: C1=1
GPU MinFreq=1377000000 MaxFreq=1377000000 CurrentFreq=1377000000
EMC MinFreq=204000000 MaxFreq=2133000000 CurrentFreq=2133000000 FreqOverride=1
"""


def thermal_zones(root: Path, temps: dict[str, int], trip_mc: int = 50000) -> Path:
    """A /sys/class/thermal tree: one zone per (type, millidegrees) with a passive trip point at `trip_mc`."""
    for i, (kind, milli) in enumerate(temps.items()):
        zone = root / f"thermal_zone{i}"
        zone.mkdir(parents=True)
        (zone / "type").write_text(kind + "\n")
        (zone / "temp").write_text(f"{milli}\n")
        (zone / "trip_point_0_type").write_text("passive\n")
        (zone / "trip_point_0_temp").write_text(f"{trip_mc}\n")
    return root


def jetson_conditions(tmp_path: Path, show: str, lock: dict, during_show: str | None = None) -> dict:
    """A device bench's `conditions` made by the producers themselves (sysload, probe) on recorded inputs."""
    from edgekd.ondevice import probe, sysload

    def state(show_text: str, temps: dict[str, int], mode: str | None) -> dict:
        clocks = probe.parse_jetson_clocks(show_text)
        zones = thermal_zones(tmp_path / f"thermal-{len(list(tmp_path.glob('thermal-*')))}", temps)
        return {"power_mode": mode, "clocks": clocks, "clocks_locked": clocks["locked"], **probe.thermal(str(zones))}

    before = state(show, {"CPU-therm": 41500, "GPU-therm": 43000}, "MODE_15W_6CORE (2)")
    after = state(show, {"CPU-therm": 48000, "GPU-therm": 55500}, None)  # GPU past its passive trip point
    during = state(during_show, {"GPU-therm": 45000}, None) if during_show else None
    snap = sysload.snapshot(0.05)
    return {
        "before": snap,
        "figures": [{"batch_size": 1, "artifacts": 2, "others_cores": 0.01}],
        "after": snap,
        "power": {"source": "tegrastats", "interval_ms": 100, "samples": 40, "power_w": 6.1, "basis": "VDD_IN"},
        "jetson": {"before": before, "during": during, "after": after, "lock_clocks": lock},
    }


def test_unlocked_clocks_are_noted_beside_the_figures(tmp_path: Path) -> None:
    run = tmp_path / "run"
    specs = {"teacher_onnx": (92.0, 20.0), "student_onnx": (91.0, 4.0)}
    write_bench(run, bench("local", "host", records(specs)))
    unlocked = bench("xavier", "jetson-xavier-nx", records(specs))
    unlocked.conditions = jetson_conditions(
        tmp_path, SHOW_UNLOCKED, {"requested": False, "locked_by_bench": False, "error": None}
    )
    write_bench(run, unlocked)
    files = write_report([run], run / "report", BudgetConfig())
    md, page = files.markdown.read_text(), files.html.read_text()
    xavier = md[md.index("## Device xavier") :].split("\n## ")[0]
    table_end = xavier.index("\n\n", xavier.index("| Artifact | Runtime"))
    note = "**Clocks not locked: figures may move with DVFS; set `lock_clocks: true` in devices.yaml.**"
    assert xavier[table_end:].lstrip().startswith(note)  # right under the latency table
    assert "xavier: clocks not locked" in html_summary(page)
    under = next(line for line in xavier.splitlines() if line.startswith("Measured under:"))
    assert "power mode MODE_15W_6CORE (2)" in under and "clocks NOT locked" in under
    assert "hottest zone 43.0 °C (GPU-therm) before, 55.5 °C (GPU-therm) after" in under
    assert "THROTTLING seen: GPU-therm (after)" in under and "power from tegrastats (VDD_IN)" in under
    assert "CPU threads" in under and "load " in under and ("CPU governor" in under)
    local = md[md.index("## Device local") :].split("\n## ")[0]
    assert "Clocks not locked" not in local and "power mode" not in local  # a host has no Jetson facts

    # the bench locked them (lock_clocks: true): no note, and the line says who locked them
    locked = bench("xavier", "jetson-xavier-nx", records(specs))
    locked.conditions = jetson_conditions(
        tmp_path, SHOW_UNLOCKED, {"requested": True, "locked_by_bench": True, "error": None}, during_show=SHOW_LOCKED
    )
    write_bench(run, locked)
    md = write_report([run], tmp_path / "locked", BudgetConfig()).markdown.read_text()
    assert "Clocks not locked" not in md and "clocks not locked" not in md
    assert "clocks locked by the bench (lock_clocks)" in md

    # lock_clocks asked for but refused (no password-less sudo): not locked, and why
    refused = bench("xavier", "jetson-xavier-nx", records(specs))
    refused.conditions = jetson_conditions(
        tmp_path, SHOW_UNLOCKED, {"requested": True, "locked_by_bench": False, "error": "sudo: a password is required"}
    )
    write_bench(run, refused)
    md = write_report([run], tmp_path / "refused", BudgetConfig()).markdown.read_text()
    assert "clocks NOT locked (lock_clocks failed: sudo: a password is required)" in md
    assert "Clocks not locked: figures may move with DVFS" in md


def test_unstable_figures_are_listed_in_the_summary_and_fail_strict(tmp_path: Path, tiny_pipeline) -> None:
    from rich.console import Console

    from edgekd.config import load_pipeline
    from edgekd.manifest import Manifest
    from edgekd.pipeline import RunContext
    from edgekd.progress import Reporter
    from edgekd.report.terminal import strict_failures
    from edgekd.rundir import RunDir
    from edgekd.stages.report import ReportStage

    run = tmp_path / "run"
    specs = {"teacher_onnx": (92.0, 20.0), "student_onnx": (91.0, 4.0)}
    write_bench(run, bench("local", "host", records(specs)))
    shaky = records(specs)
    why = "rounds differ by 14% (limit 10%); other processes used 1.2 cores (limit 0.5)"
    shaky[0].latency[1] = replace(shaky[0].latency[1], stable=False, spread=0.14, unstable=why)
    write_bench(run, bench("xavier", "jetson-xavier-nx", shaky))
    cfg = load_pipeline(tiny_pipeline())
    ctx = RunContext(cfg, RunDir(run), Reporter(Console(quiet=True)), Manifest(run, "test"))
    ctx.stage_name = "report"

    metrics = ReportStage().run(ctx, cfg.benchmark, {}).metrics
    assert metrics["unstable"] == [f"xavier: teacher_onnx batch 4: {why}"]
    assert metrics["meets_budget"]  # the budget holds: only the figures are in doubt
    problems = strict_failures(metrics, run, "local")
    assert problems == [
        f"1 unstable figure (worst: xavier: teacher_onnx batch 4: {why}); re-measure them with "
        f"`edgekd bench {run} --repeat-unstable` (xavier: `edgekd bench {run} --device NAME`)"
    ]
    md = ctx.out("report_md").read_text()  # the stage's output, before the runner moves it into place
    summary = md[: md.index("## Side by side")]
    assert "**† 1 unstable figure**" in summary and f"- xavier: teacher_onnx batch 4: {why}" in summary
    assert "| xavier † |" in summary and "| local |" in summary  # the device is marked in the summary table
    assert f"`edgekd bench {run} --repeat-unstable`" in summary
    assert json.loads(ctx.out("report_json").read_text())["unstable"] == metrics["unstable"]

    write_bench(run, bench("xavier", "jetson-xavier-nx", records(specs)))  # measured again, quietly
    metrics = ReportStage().run(ctx, cfg.benchmark, {}).metrics
    assert metrics["unstable"] == [] and strict_failures(metrics, run, "local") == []
    assert "unstable" not in ctx.out("report_md").read_text()
    # the budget condition still holds on its own
    assert "accuracy budget" in strict_failures({**metrics, "meets_budget": False, "unmet": ["x"]}, run, "local")[0]


def test_run_strict_exits_1_on_an_unstable_figure(tmp_path: Path, tiny_pipeline) -> None:
    """`edgekd run --only report --strict` on a run whose bench file (vouched by the manifest) has an unstable figure."""
    from typer.testing import CliRunner

    from edgekd.cli import app
    from edgekd.ondevice.files import sha256_file

    run = tmp_path / "run"
    recs = records({"teacher_onnx": (92.0, 20.0), "student_onnx": (91.0, 4.0)})
    recs[1].latency[0] = replace(recs[1].latency[0], stable=False, spread=0.31, unstable="rounds differ by 31%")
    write_bench(run, bench("local", "host", recs))
    path = run / "bench" / "local.json"
    art = {"path": "bench/local.json", "sha256": sha256_file(path), "bytes": path.stat().st_size}
    manifest(run, benchmark={**stage("done"), "key": "hand-written", "artifacts": {"bench": art}})
    # the CLI's app in this process (typer's CliRunner): the same command and exit path, without a second
    # interpreter importing torch to write one report
    done = CliRunner().invoke(app, ["run", str(tiny_pipeline()), "--run-dir", str(run), "--only", "report", "--strict"])
    assert done.exception is None or isinstance(done.exception, SystemExit), repr(done.exception)
    assert done.exit_code == 1, done.stderr[-2000:]
    message = " ".join(done.stderr.split())  # rich may wrap the line on a narrow terminal
    assert "strict: 1 unstable figure (worst: local: student_onnx batch 1: rounds differ by 31%)" in message
    assert f"edgekd bench {run} --repeat-unstable" in message
    assert "accuracy budget" not in message  # the budget is met: only the figure fails it


def test_the_report_says_when_int8_lost_to_fp16_on_a_device(tmp_path: Path) -> None:
    """int8 engines can be slower than fp16 ones (NVIDIA/TensorRT #4720): the device's note says which."""
    run = tmp_path / "run"

    def engines(int8_p50: float) -> list[ArtifactRecord]:
        out = records({"teacher_onnx": (92.0, 20.0)})
        for art_id, (top1, p50) in {
            "student_trt_fp16": (90.0, 1.0),
            "student_qat_trt_int8": (89.8, int8_p50),
            "teacher_trt_fp16": (92.0, 5.0),
        }.items():
            lat = [Latency(bs, 10, p50 * bs, p50 * bs, p50 * bs, p50 * bs, 0, p50, p50, 1000 / p50) for bs in BATCHES]
            rt = RuntimeInfo("tensorrt", "8.5.2.2", "GPU Xavier", 1)
            path = catalog.path_of(art_id, "xavier")
            out.append(ArtifactRecord(art_id, "done", path, runtime=rt, latency=lat, accuracy=Accuracy(100, top1, 100)))
        return out

    write_bench(run, bench("xavier", "jetson-agx-xavier", engines(1.3)))
    md = write_report([run], run / "report", BudgetConfig()).markdown.read_text()
    assert "int8 lost to fp16 on xavier: student_qat_trt_int8 (1.30 ms) was not faster than student_trt_fp16" in md
    write_bench(run, bench("xavier", "jetson-agx-xavier", engines(0.7)))
    assert "int8 lost" not in write_report([run], run / "report", BudgetConfig()).markdown.read_text()


def test_the_terminal_names_the_count_and_the_worst_few_unstable_figures(tmp_path: Path) -> None:
    """Twenty-four unstable figures made a 3,000-character line: the terminal gets the count and the worst three."""
    from edgekd.report.terminal import unstable_message

    unstable = [f"local: a{i} batch 1: rounds differ by {20 + i}% (limit 25%)" for i in range(24)]
    line = unstable_message(unstable, tmp_path, "local")
    assert line.startswith(
        "24 unstable figures (worst: local: a23 batch 1: rounds differ by 43% (limit 25%); local: a22"
    )
    assert "local: a21 batch 1" in line and "local: a20" not in line and "21 more in the report" in line
    assert len(line) < 400


def _kd_report(run: Path, distilled: np.ndarray, baseline: np.ndarray) -> tuple[str, dict]:
    """report.md and report.json's kd of a run whose distill and baseline stages got `distilled`/`baseline` right."""
    run.mkdir()
    manifest(
        run,
        distill=stage("done", val_top1=100 * distilled.mean(), val_correct=ValOutcome.of(distilled).to_dict()),
        baseline=stage("done", val_top1=100 * baseline.mean(), val_correct=ValOutcome.of(baseline).to_dict()),
    )
    files = write_report([run], run / "report", BudgetConfig())
    return files.markdown.read_text(), json.loads(files.json.read_text())["runs"][0]["kd"]


def test_what_distillation_bought_is_tested_image_by_image(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    base = rng.random(359) < 0.9
    better = base.copy()
    wrong = np.flatnonzero(~base)
    better[wrong[:10]] = True  # right on 10 images the baseline gets wrong
    better[np.flatnonzero(base)[0]] = False  # and wrong on 1 it gets right
    md, kd = _kd_report(tmp_path / "a", better, base)
    assert (kd["images"], kd["gained"], kd["lost"]) == (359, 10, 1)
    assert kd["p_value"] == pytest.approx(2 * (1 + 11) / 2**11)  # P(at most 1 of 11 fair coin flips), both tails
    assert (
        "of 359 validation images the distilled student alone gets 10 right and the baseline alone 1: "
        "distillation is better beyond what chance explains (exact McNemar test, p = 0.012)."
    ) in md

    close = base.copy()
    close[wrong[:2]] = True
    close[np.flatnonzero(base)[0]] = False
    md, kd = _kd_report(tmp_path / "b", close, base)
    assert (kd["gained"], kd["lost"], kd["p_value"]) == (2, 1, pytest.approx(1.0))
    assert "Distillation bought **+0.28 points**" in md
    assert "the distilled student alone gets 2 right and the baseline alone 1: chance alone splits" in md
    assert "so this run shows no difference (exact McNemar test, p = 1)." in md

    md, kd = _kd_report(tmp_path / "c", base, base)
    assert (kd["gained"], kd["lost"]) == (0, 0)
    assert "Image by image they get the same 359 validation images right: nothing separates them." in md


@pytest.mark.parametrize(("gained", "lost", "p"), [(0, 0, 1.0), (3, 0, 0.25), (0, 10, 2 / 2**10), (5, 5, 1.0)])
def test_mcnemar_p_is_the_exact_two_sided_binomial_tail(gained, lost, p):
    assert mcnemar_p(gained, lost) == pytest.approx(p)
    assert mcnemar_p(20000, 19000) == pytest.approx(4.2168e-07, rel=1e-3)  # large splits: no big integers


def test_a_broken_val_correct_record_is_one_line_naming_the_field(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    good = ValOutcome.of(np.ones(16, bool)).to_dict()
    manifest(
        run,
        distill=stage("done", val_top1=100.0, val_correct={"images": 17, "correct": good["correct"]}),
        baseline=stage("done", val_top1=100.0, val_correct=good),
    )
    with pytest.raises(
        EdgekdError, match=r"stages\.distill\.metrics\.val_correct\.correct: 2 bytes hold no bitmask of 17"
    ):
        write_report([run], run / "report", BudgetConfig())


def test_the_terminal_line_of_what_distillation_bought():
    from edgekd.report.model import KdGain
    from edgekd.report.terminal import kd_line

    assert kd_line(KdGain(97.0, 88.0)) == (
        "distillation: +9.00 points of top-1 over the hard-label baseline (97.00% against 88.00%)."
    )  # a run recorded before val_correct: the figures alone
    line = kd_line(KdGain(97.0, 88.0, images=100, gained=10, lost=1, p_value=mcnemar_p(10, 1)))
    assert line.endswith(
        "the distilled student alone gets 10 right and the baseline alone 1: distillation is "
        "better beyond what chance explains (exact McNemar test, p = 0.012)."
    )
