"""The prune stage's step records: one validating reader, and the report's pruning section built from them."""

import pytest

from edgekd.ondevice.records import RecordError
from edgekd.report.layout import pruning_blocks
from edgekd.report.model import RunSection
from edgekd.run_records import PruneStep, not_faster, prune_steps


def _step(step, macs, latency, top1=None, met=False):
    return PruneStep(step, 0.1 * step, macs, 1000 - step, macs / 100, 1.0, latency, 0.05, top1, met)


def test_steps_round_trip_and_a_bad_field_is_named():
    steps = [_step(0, 100, 1.0, 99.0), _step(1, 70, 0.8, 98.5), _step(2, 50, 0.9, 97.0, True)]
    assert prune_steps({"steps": [s.to_dict() for s in steps]}) == steps
    assert prune_steps({}) == []
    bad = steps[1].to_dict() | {"macs": "70"}
    with pytest.raises(RecordError, match=r"prune.steps\[1\].macs: expected int"):
        prune_steps({"steps": [steps[0].to_dict(), bad]})


def test_the_report_says_when_the_macs_fell_and_the_latency_did_not():
    steps = [_step(0, 100, 1.0, 99.0), _step(1, 70, 0.8, 98.5), _step(2, 50, 0.9, 97.0, True)]
    assert [(a.step, b.step) for a, b in not_faster(steps)] == [(1, 2)]
    blocks = pruning_blocks(RunSection("run", "/r", pruning=steps), "")
    text = " ".join(str(b) for b in blocks)
    assert blocks[0] == ("h2", "Pruning") and "**Step 2: the MACs fell by 29% but the latency did not**" in text
    assert "Step 1:" not in text  # it got faster
    table = next(b for b in blocks if b[0] == "table")
    assert [r[0] for r in table[2]] == ["teacher", "1", "2"] and table[2][2][-1] == "met"
    assert pruning_blocks(RunSection("run", "/r"), "") == []


def test_a_device_figure_says_where_and_what_ran_it_and_the_standin_is_never_called_tensorrt():
    timed = {"device": "orin", "artifact": "onnx_file_trt_fp16", "precision": "fp16"}
    standin = [
        PruneStep(s, 0.1 * s, 100 - 30 * s, 90, 1.0, 1.0, 1.0, 0.01, runtime="tensorrt-standin 8.5.2-standin", **timed)
        for s in (0, 1)
    ]
    assert prune_steps({"steps": [s.to_dict() for s in standin]}) == standin
    text = " ".join(str(b) for b in pruning_blocks(RunSection("run", "/r", pruning=standin), ""))
    assert "orin: tensorrt-standin 8.5.2-standin fp16" in text and "on orin" in text
    assert "TensorRT stand-in (`tensorrt-standin`" in text and "prove the flow, not TensorRT's speed" in text
    real = [PruneStep(0, 0.0, 100, 90, 1.0, 1.0, 1.0, 0.01, runtime="tensorrt 8.5.2.2", **timed)]
    text = " ".join(str(b) for b in pruning_blocks(RunSection("run", "/r", pruning=real), ""))
    assert "orin: tensorrt 8.5.2.2 fp16" in text and "stand-in" not in text
    local = [PruneStep(0, 0.0, 100, 90, 1.0, 1.0, 1.0, 0.01, device="local", runtime="onnxruntime 1.20.1")]
    assert "on this machine" in " ".join(str(b) for b in pruning_blocks(RunSection("run", "/r", pruning=local), ""))


def _timed(step, macs, latency, teacher_ms, met=False, unstable=None, judged=None):
    return PruneStep(
        step, 0.1 * step, macs, 90, macs / 100, 1.0, latency, 0.05, 98.0, met, "local", "onnx_file", "fp32",
        "onnxruntime 1.20.1", teacher_ms, unstable, judged,
    )  # fmt: skip


def test_steps_timed_beside_the_teacher_are_judged_by_their_share_of_it_not_by_figures_taken_minutes_apart():
    # step 2's figure is higher than step 1's only because the machine slowed between them: beside the teacher
    # in the same rounds it got faster (0.9x -> 0.7x), so the report does not say the latency did not fall
    steps = [_timed(0, 100, 1.0, None), _timed(1, 70, 0.9, 1.0), _timed(2, 50, 1.05, 1.5, True)]
    assert [s.of_teacher for s in steps] == [1.0, 0.9, pytest.approx(0.7)]
    assert not_faster(steps) == []
    assert prune_steps({"steps": [s.to_dict() for s in steps]}) == steps
    slower = [*steps[:2], _timed(2, 50, 1.0, 1.0, True)]  # in the same rounds it is no faster: said, with the shares
    blocks = pruning_blocks(RunSection("run", "/r", pruning=slower), "")
    text = " ".join(str(b) for b in blocks)
    assert "the latency did not** (0.90× → 1.00× the teacher's, each timed in the same rounds)" in text
    table = next(b for b in blocks if b[0] == "table")
    assert table[1][5] == "Of teacher" and [r[5] for r in table[2]] == ["1.00×", "0.90×", "1.00×"]
    noisy = [steps[0], _timed(1, 70, 0.9, 1.0, True, "rounds differ by 57% (limit 25%)")]
    cell = next(b for b in pruning_blocks(RunSection("run", "/r", pruning=noisy), "") if b[0] == "table")[2][1][4]
    assert cell.kind == "unstable" and "rounds differ by 57%" in cell.text


def test_a_latency_target_is_checked_against_the_benchmarks_figure_of_the_trained_student():
    from edgekd.ondevice.records import ArtifactRecord, BenchDoc, Latency
    from edgekd.report.build import prune_check
    from edgekd.run_records import prune_target_ms

    def figure(p50, spread=0.05):
        return [Latency(1, 3, p50, p50, p50, p50, 0.0, p50, p50, 1000 / p50, [p50, p50], spread)]

    # met at step 2 (0.28 ms); the benchmark later ran the machine 1.9x slower: the student at 0.45 ms, the
    # teacher at 0.60 against 0.314 at step 0
    steps = [_timed(0, 100, 0.314, None), _timed(1, 70, 0.305, 0.33), _timed(2, 50, 0.28, 0.32, True, None, 0.2748)]
    records = [
        ArtifactRecord("student_onnx", "done", "export/student.onnx", latency=figure(0.45)),
        ArtifactRecord("teacher_onnx", "done", "export/teacher.onnx", latency=figure(0.60)),
    ]
    bench = BenchDoc("mybox", "host", "now", "teacher_onnx", artifacts=records)
    target = prune_target_ms({"target": {"latency_ms": 0.3, "device": "local"}})
    assert target == 0.3 and prune_target_ms({"target": {"macs": 0.5}}) is None
    check = prune_check(steps, target, [bench])
    assert (check.met, check.step, check.artifact, check.bench_ms, check.teacher_then_ms) == (
        True, 2, "student_onnx", 0.45, 0.314,
    )  # fmt: skip
    blocks = pruning_blocks(RunSection("run", "/r", pruning=steps, prune_check=check), "")
    text = next(b[1] for b in blocks if b[0] == "p" and "Latency target" in b[1])
    assert "**Latency target 0.3 ms on local: met at step 2 (0.275 ms at step 0's speed, 0.280 ms as timed).**" in text
    assert "`student_onnx` at 0.450 ms (p50, batch 1): over the target" in text
    assert "`teacher_onnx` took 0.600 ms against 0.314 ms at step 0: the machine ran 91% slower" in text
    assert "the student runs in 0.75× the teacher's time (0.88× at its step)" in text
    assert prune_check(steps, None, [bench]) is None  # a size target: nothing to check
    assert prune_check(steps, target, []) is None  # not benchmarked here
