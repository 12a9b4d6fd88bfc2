"""The scout stage on tiny digits: `student.model: auto` picks the candidate with the most MACs within the budget,
and it is the student of every later stage; the top k ranked by a brief distillation; a budget nothing meets."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.config import load_pipeline
from edgekd.errors import EdgekdError
from edgekd.manifest import Manifest
from edgekd.models import load_model
from edgekd.ondevice.files import sha256_file
from edgekd.ondevice.records import BenchDoc
from edgekd.pipeline import Runner
from edgekd.report.budgets import tie
from edgekd.run_records import ScoutTable, scout_choice
from edgekd.rundir import RunDir
from edgekd.stages import all_stages
from edgekd.stages.scout import ScoutStage
from edgekd.stages.teacher import TeacherStage

pytest.importorskip("torch_pruning")

LEAN = (
    "qat: {enabled: false}\ndynamic_quant: {enabled: false}\ntensorrt: {enabled: false}\n"
    "export: {teacher: false, fp16_onnx: false, torchscript: 'off'}\n"
)


def _auto(tiny_pipeline, candidates: str, budget_ms: float, extra: str = "", teacher: str = "resnet8"):
    path = tiny_pipeline(distill_epochs=1, limit_train=128, extra=extra)
    text = path.read_text().replace("student:\n  model: resnet8\n", "student:\n  model: auto\n")
    text = text.replace("teacher:\n  model: resnet8\n", f"teacher:\n  model: {teacher}\n")
    text = text.replace("  repeats: 1\n", f"  repeats: 2\n  budget:\n    latency_ms: {{local: {budget_ms}}}\n")
    path.write_text(text + f"scout:\n  candidates: {candidates}\n")
    return path


def test_the_scout_is_skipped_unless_the_student_is_auto(tiny_pipeline, tmp_path):
    plan = {e.stage: e for e in Runner(load_pipeline(tiny_pipeline()), all_stages(), tmp_path).plan()}
    assert plan["scout"].action == "skip" and plan["scout"].why == "student.model is not auto"


def test_a_device_devices_yaml_does_not_define_stops_the_run_before_the_teacher(tiny_pipeline, tmp_path):
    path = _auto(tiny_pipeline, "[resnet8]", 5)
    devices = tmp_path / "devices.yaml"
    devices.write_text("devices: {orin: {host: 10.0.0.2, kind: jetson-orin-nano}}\n")
    extra = f"  devices: [xavier]\n  devices_file: {devices}\n"
    path.write_text(path.read_text().replace("{local: 5}", "{xavier: 5}") + extra)
    result = CliRunner().invoke(app, ["run", str(path), "--run-dir", str(tmp_path / "run")])
    message = " ".join(result.stderr.split())
    assert result.exit_code == 2 and "scout device 'xavier'" in message and "no device named 'xavier'" in message
    assert Manifest(tmp_path / "run").stage("teacher") is None


@pytest.mark.slow
def test_auto_picks_the_largest_candidate_within_budget_and_every_later_stage_trains_it(tiny_pipeline, tmp_path):
    # the teacher resnet14 cut to half its MACs has more of them than mobilenet_v3_small at 16x16
    path = _auto(
        tiny_pipeline, "[mobilenet_v3_small, prune/0.5]", 1000, LEAN + "baseline: {enabled: true}\n", "resnet14"
    )
    m = Runner(load_pipeline(path), all_stages(), tmp_path).run()
    status = {name: rec.status for name, rec in m.stages.items()}
    assert status["scout"] == "done" and status["prune"] == "skipped" and status["report"] == "done", status
    choice = scout_choice(m.stage("scout").metrics)
    assert choice.chosen == "prune/0.5" and choice.table.entry("prune/0.5").within_budget
    assert (
        "the most MACs" in choice.why
        and "of the 2 candidates (of 2 scouted) within 900 ms (1000 ms less scout.headroom 10%) on local" in choice.why
    )
    _, chosen = load_model(tmp_path / m.stage("scout").artifacts["scout_student"].path)
    assert chosen.name == "resnet14" and chosen.structure
    for stage, art in (("distill", "student"), ("baseline", "baseline_student")):
        _, spec = load_model(tmp_path / m.stage(stage).artifacts[art].path)
        assert spec == chosen, stage  # the scout's architecture, rebuilt from plain data
    assert m.stage("distill").metrics["student_init"]["weights"] == "the scout's choice (scout/student.pt)"
    assert m.stage("baseline").metrics["student_init"]["weights"].startswith("none (the scout's architecture")
    report = (tmp_path / "report" / "report.md").read_text()
    assert "## Scout" in report and "| prune/0.5 |" in report and "**Scout vs benchmark on local:**" in report
    _the_scouts_file_was_re_timed_beside_the_trained_student(m, tmp_path, report)
    plan = {e.stage: e.action for e in Runner(load_pipeline(path), all_stages(), tmp_path).plan()}
    assert plan["scout"] == "cached" and plan["distill"] == "cached"
    # `edgekd scout` on the run cuts the same trained teacher: every figure the stage took serves it
    result = CliRunner().invoke(app, ["scout", str(path), "--run-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    table = ScoutTable.from_dict(json.loads(RunDir(tmp_path).scout_table("local").read_text()))
    assert [e.cached for e in table.entries] == [True, True]


def _the_scouts_file_was_re_timed_beside_the_trained_student(m: Manifest, run: Path, report: str) -> None:
    """scout/chosen.onnx is the chosen architecture, timed in the benchmark's rounds for latency alone, and the report
    judges the trained student against it, quoting the scout's figure, the re-timed one and the trained one."""
    scout, export = (
        run / m.stage(s).artifacts[a].path for s, a in (("scout", "scout_onnx"), ("export", "student_onnx"))
    )
    shapes = [sorted(tuple(i.dims) for i in onnx.load(str(f)).graph.initializer) for f in (scout, export)]
    assert shapes[0] == shapes[1]  # the chosen student's architecture, untrained
    bench = BenchDoc.from_dict(json.loads(RunDir(run).bench_file("local").read_text()))
    retimed, trained = bench.get("scout_onnx"), bench.get("student_onnx")
    assert retimed.status == "done" and retimed.accuracy is None and retimed.sha256 == sha256_file(scout)
    figures = retimed.latency_at(1), trained.latency_at(1)  # the budget's batch
    assert None not in figures and trained.accuracy is not None
    doc = json.loads((run / "report" / "report.json").read_text())
    check = doc["runs"][0]["scout_check"]
    assert (check["retimed_ms"], check["bench_ms"]) == (figures[0].p50_ms, figures[1].p50_ms)
    assert check["agree"] == tie(*figures) and check["not_retimed"] is None
    scout_ms = scout_choice(m.stage("scout").metrics).table.entry("prune/0.5").p50_ms
    assert check["scout_ms"] == scout_ms and check["drift"] == pytest.approx(figures[0].p50_ms / scout_ms - 1)
    row = next(r for r in doc["devices"][0]["rows"] if r["id"] == "scout_onnx")
    assert row["latency_only"] and row["budget"] is None and row["latency_budget"] is None
    assert doc["recommendations"]["local"] != "scout_onnx"
    for figure in (scout_ms, figures[0].p50_ms, figures[1].p50_ms):
        assert f"{figure:.3f} ms" in report
    assert "(`scout_onnx`) at" in report and "in the same interleaved rounds" in report
    assert "| scout_onnx (latency only) |" in report


@pytest.mark.slow
def test_the_top_k_are_ranked_on_training_images_held_out(tiny_pipeline, tmp_path):
    path = _auto(tiny_pipeline, "[resnet8, mobilenet_v3_small, prune/0.5]", 1000)
    path.write_text(path.read_text() + "  top_k: 2\n  train_epochs: 1\n  selection_split: 0.25\n")
    m = Runner(load_pipeline(path), [TeacherStage(), ScoutStage()], tmp_path).run()
    choice = scout_choice(m.stage("scout").metrics)
    fitting = m.stage("scout").metrics["fitting"]
    assert [t.candidate for t in choice.trials] == fitting[:2] and all(t.epochs == 1 for t in choice.trials)
    best = max(choice.trials, key=lambda t: t.selection_top1)
    assert choice.chosen == best.candidate and "25% of the training data held out" in choice.why
    assert "the validation split was not used" in choice.why

    def plan(old: str, new: str) -> dict:
        path.write_text(path.read_text().replace(old, new))
        return {
            e.stage: (e.action, e.why)
            for e in Runner(load_pipeline(path), [TeacherStage(), ScoutStage()], tmp_path).plan()
        }

    # the budget is read, the benchmark's batch sizes other than the budget's are not
    assert plan("batch_sizes: [1]", "batch_sizes: [1, 4]")["scout"][0] == "cached"
    changed = plan("latency_ms: {local: 1000}", "latency_ms: {local: 900}")
    assert changed["scout"] == ("run", "its config changed") and changed["teacher"][0] == "cached"


@pytest.mark.slow
def test_a_budget_nothing_meets_stops_at_the_scout_naming_the_fastest(tiny_pipeline, tmp_path):
    path = _auto(tiny_pipeline, "[resnet8]", 0.0001)
    with pytest.raises(EdgekdError) as e:
        Runner(load_pipeline(path), all_stages(), tmp_path).run()
    message = str(e.value)
    assert "\n" not in message and "the fastest, resnet8, takes" in message
    assert message.startswith(
        "benchmark.budget.latency_ms.local: no scout candidate runs within 9e-05 ms (0.0001 ms less scout.headroom 10%) on local"
    )
    record = Manifest(tmp_path).stage("scout")
    assert record.status == "failed" and record.error == message
    assert Manifest(tmp_path).stage("distill") is None  # nothing after the scout ran
