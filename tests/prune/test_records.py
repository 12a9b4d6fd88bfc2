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
