"""The prune stage end to end on tiny digits: the pruned teacher becomes the student of every later stage."""

import json

import onnx
import pytest
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.config import load_pipeline
from edgekd.errors import EdgekdError
from edgekd.manifest import Manifest
from edgekd.models import load_model
from edgekd.ondevice.records import BenchDoc
from edgekd.pipeline import Runner
from edgekd.run_records import prune_steps
from edgekd.rundir import RunDir
from edgekd.stages import all_stages
from edgekd.stages.prune import PruneStage
from edgekd.stages.teacher import TeacherStage

pytest.importorskip("torch_pruning")

TIMING = "timing: {warmup: 1, min_runs: 3, min_seconds: 0.0, repeats: 1}"


def _prune_pipeline(tiny_pipeline, prune: str, extra: str = "", name: str = "p.yaml"):
    path = tiny_pipeline(distill_epochs=1, extra=extra, name=name, limit_train=128)
    text = path.read_text().replace("student:\n  model: resnet8\n", f"student:\n  prune: {{{prune}, {TIMING}}}\n")
    path.write_text(text)
    return path


def test_a_timing_device_devices_yaml_does_not_define_stops_the_run_before_the_teacher(tiny_pipeline, tmp_path):
    devices = tmp_path / "devices.yaml"
    devices.write_text("devices: {orin: {host: 10.0.0.2, kind: jetson-orin-nano}}\n")
    for device, devices_file, says in (
        ("xavier", devices, "no device named 'xavier'; defined devices: orin"),
        ("orin", tmp_path / "missing.yaml", "missing.yaml"),
    ):
        target = f"target: {{latency_ms: 1.0, device: {device}, devices_file: {devices_file}}}, recover_epochs: 0"
        path = _prune_pipeline(tiny_pipeline, target)
        result = CliRunner().invoke(app, ["run", str(path), "--run-dir", str(tmp_path / "run")])
        message = " ".join(result.stderr.split())
        assert result.exit_code == 2 and message.startswith("error: student.prune.target.device: "), message
        assert says in message and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert Manifest(tmp_path / "run").stage("teacher") is None
    known = f"target: {{latency_ms: 1.0, device: orin, devices_file: {devices}}}, recover_epochs: 0"
    result = CliRunner().invoke(app, ["validate", str(_prune_pipeline(tiny_pipeline, known, name="ok.yaml"))])
    # the target in words, not a dict's repr
    said = " ".join(result.stdout.split())
    assert result.exit_code == 0 and "student resnet8 pruned to 1 ms at batch 1 on orin" in said, said


@pytest.mark.slow
def test_pruned_teacher_goes_through_distill_baseline_export_benchmark_and_report(tiny_pipeline, tmp_path):
    extra = (  # the first line goes into the distill section: a feature pair the pruned layer3 still makes
        "  features: [{teacher: layer3, student: layer3, loss: hint, weight: 1}]\n"
        "baseline: {enabled: true}\nqat: {enabled: false}\ndynamic_quant: {enabled: false}\n"
        "export: {teacher: false, fp16_onnx: false, torchscript: 'off'}\ntensorrt: {enabled: false}\n"
    )
    prune = "target: {macs: 0.6}, steps: 2, round_to: 2, recover_epochs: 1, recover_lr: 0.0123"
    path = _prune_pipeline(tiny_pipeline, prune, extra)
    run_dir = tmp_path / "run"
    m = Runner(load_pipeline(path), all_stages(), run_dir).run()
    rec = m.stage("prune")
    steps = prune_steps(rec.metrics)
    for k in (1, 2):  # each step recovered at its own rate, the distill stage at distill.lr
        (epoch,) = [json.loads(line) for line in (run_dir / "prune" / f"step{k}" / "metrics.jsonl").open()]
        assert epoch["lr"] == 0.0123, epoch
    assert [s.step for s in steps] == [0, 1, 2] and steps[-1].met_target and steps[-1].macs_share <= 0.6
    for prev, s in zip(steps, steps[1:]):  # no step removes more than a third
        assert 2 / 3 * prev.macs <= s.macs < prev.macs and s.latency_ms > 0 and s.val_top1 is not None
    pruned, spec = load_model(run_dir / rec.artifacts["pruned_student"].path)
    assert spec.name == "resnet8" and spec.structure
    for stage, art in (("distill", "student"), ("baseline", "baseline_student")):
        _, other = load_model(run_dir / m.stage(stage).artifacts[art].path)
        assert other.structure == spec.structure, stage  # the same pruned architecture, rebuilt from plain data
    assert m.stage("baseline").metrics["student_init"]["weights"].startswith("none (the pruned architecture")
    assert m.stage("distill").metrics["student_init"]["weights"].startswith("the pruned teacher")
    assert pruned.layer3[0].conv1.out_channels < 64  # layer3 was cut: the hint goes through an adapter
    epochs = [json.loads(line) for line in (run_dir / m.stage("distill").artifacts["distill_metrics"].path).open()]
    assert m.stage("distill").metrics["feature_pairs"] == 1 and all(e["feat0_hint"] > 0 for e in epochs)
    assert epochs[0]["lr"] == 0.1  # distill.lr: recover_lr is the recovery's alone
    assert m.stage("export").metrics["artifacts"]["student_onnx"]["parity"]["top1_agreement"] >= 0.99
    proto = onnx.load(str(run_dir / m.stage("export").artifacts["student_onnx"].path))
    sizes = {i.name: i.dims[0] for i in proto.graph.initializer}
    convs = [sizes[n.input[1]] for n in proto.graph.node if n.op_type == "Conv"]
    assert sorted(convs) == sorted(m.out_channels for m in pruned.modules() if hasattr(m, "out_channels"))
    assert all(c % 2 == 0 for c in convs) and sum(convs) < 16 * 7 + 32 * 3 + 64 * 3  # resnet8's own
    report = (run_dir / "report" / "report.md").read_text()
    assert "## Pruning" in report and "| teacher |" in report
    # the scout was skipped: the scout's file is no product of this run, not even a skipped row
    bench = BenchDoc.from_dict(json.loads(RunDir(run_dir).bench_file("local").read_text()))
    assert m.stage("scout").status == "skipped" and bench.get("scout_onnx") is None
    assert "scout_onnx" not in report and "Scout vs benchmark" not in report

    assert {e.stage: e.action for e in Runner(load_pipeline(path), all_stages(), run_dir).plan()}["prune"] == "cached"
    changed = _prune_pipeline(tiny_pipeline, prune.replace("recover_epochs: 1", "recover_epochs: 0"), extra, "c.yaml")
    plan = {e.stage: (e.action, e.why) for e in Runner(load_pipeline(changed), all_stages(), run_dir).plan()}
    assert plan["prune"] == ("run", "its config changed") and plan["distill"][0] == "run"
    assert plan["teacher"][0] == "cached"


@pytest.mark.slow
def test_latency_target_stops_at_the_first_step_that_meets_it(tiny_pipeline, tmp_path):
    run_dir = tmp_path / "run"
    stages = [TeacherStage(), PruneStage()]
    loose = _prune_pipeline(tiny_pipeline, "target: {latency_ms: 1000}, steps: 3, round_to: 2, recover_epochs: 0")
    with pytest.raises(EdgekdError, match=r"target.latency_ms: the unpruned teacher already runs in .* ms"):
        Runner(load_pipeline(loose), stages, run_dir).run()
    # a target between the teacher's latency and a third of it: each step is measured, the first that meets it ends
    teacher_ms = prune_steps_failed_teacher_ms(run_dir)
    target = _prune_pipeline(
        tiny_pipeline,
        f"target: {{latency_ms: {teacher_ms * 0.8:.4f}}}, steps: 3, round_to: 2, recover_epochs: 0",
        name="t.yaml",
    )
    try:
        m = Runner(load_pipeline(target), stages, run_dir).run()
    except EdgekdError as e:  # timing noise may put the teacher under the target, or every step above it: one line
        msg = str(e)
        assert ("target: latency_ms" in msg and "not met after 3 steps" in msg) or "already runs in" in msg, msg
        return
    steps = prune_steps(m.stage("prune").metrics)
    # judged at step 0's machine speed: the share of the teacher timed beside it, times the teacher's step-0 figure
    assert all(s.judged_ms == pytest.approx(s.of_teacher * steps[0].latency_ms) for s in steps[1:])
    met = [s.step for s in steps[1:] if s.judged_ms <= teacher_ms * 0.8]
    assert steps[-1].met_target and steps[-1].step == met[0]  # the least pruning that meets it, then it stopped
    assert all(not s.met_target for s in steps[1:-1])
    # each step's candidate was timed with the teacher's file in the same rounds: the ratio is free of drift
    assert steps[0].teacher_ms is None and steps[0].of_teacher == 1.0
    assert all(s.teacher_ms > 0 and s.of_teacher == s.latency_ms / s.teacher_ms for s in steps[1:])


def prune_steps_failed_teacher_ms(run_dir) -> float:
    """The teacher's latency as the failed attempt's candidate file was timed: re-time it with the same timer."""
    import torch

    from edgekd.fleet.timing import time_here
    from edgekd.ondevice.measure import Settings
    from edgekd.prune.latency import time_candidate

    teacher, spec = load_model(run_dir / "teacher" / "model.pt")
    example = torch.zeros(2, spec.in_channels, spec.image_size, spec.image_size)
    _, latency, _ = time_candidate(
        teacher, example, run_dir / "t.onnx", time_here, Settings((1,), 2, 10, 0.1, 1), 17, print
    )
    return latency.p50_ms
