import json
import math

import pytest
import torch

from edgekd.config import AdaptiveSchedule, DistillConfig, PhasedSchedule
from edgekd.distill.schedules import AdaptiveRule, DistillSchedules, phase_bounds, value_at

ISSUE_EXAMPLE = {
    "kind": "phases",
    "phases": [{"fraction": 0.5, "value": 8}, {"fraction": 0.3, "start": 8, "end": 2}, {"fraction": 0.2, "value": 1}],
}


def _cfg(**kw) -> DistillConfig:
    return DistillConfig.model_validate(kw)


def test_numbers_and_constants():
    assert value_at(3, 0, 10) == 3.0
    assert value_at(_cfg(temperature={"kind": "constant", "value": 2.5}).temperature, 9, 10) == 2.5


def test_linear_hits_start_at_epoch_zero_and_end_at_the_last_epoch():
    sched = _cfg(temperature={"kind": "linear", "start": 8, "end": 2}).temperature
    assert [value_at(sched, e, 4) for e in range(4)] == pytest.approx([8, 6, 4, 2])
    assert value_at(sched, 0, 1) == 8  # a single epoch gives the start
    with pytest.raises(ValueError, match="outside 0..3"):
        value_at(sched, 4, 4)


def test_cosine_boundaries_and_midpoint():
    sched = _cfg(soft_weight={"kind": "cosine", "start": 1.0, "end": 0.2}).soft_weight
    values = [value_at(sched, e, 11) for e in range(11)]
    assert values[0] == pytest.approx(1.0) and values[-1] == pytest.approx(0.2)
    assert values[5] == pytest.approx(0.6)
    assert values[1] == pytest.approx(0.2 + 0.8 * (1 + math.cos(math.pi / 10)) / 2)
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_the_issue_phases_over_ten_epochs():
    sched = _cfg(temperature=ISSUE_EXAMPLE).temperature
    assert phase_bounds(sched.phases, 10) == [(0, 5), (5, 8), (8, 10)]
    assert [value_at(sched, e, 10) for e in range(10)] == pytest.approx([8, 8, 8, 8, 8, 8, 5, 2, 1, 1])


def test_the_issue_phases_over_twenty_epochs():
    sched = _cfg(temperature=ISSUE_EXAMPLE).temperature
    values = [value_at(sched, e, 20) for e in range(20)]
    assert values[:10] == [8.0] * 10
    assert values[10:16] == pytest.approx([8 - 6 * i / 5 for i in range(6)])  # 8 at epoch 10 ... 2 at epoch 15
    assert values[16:] == [1.0] * 4


def test_a_phase_that_rounds_to_no_epochs_is_skipped():
    sched = PhasedSchedule.model_validate(ISSUE_EXAMPLE)
    assert phase_bounds(sched.phases, 3) == [(0, 2), (2, 2), (2, 3)]  # 1.5 rounds up to 2; 2.4 rounds to 2
    assert [value_at(sched, e, 3) for e in range(3)] == [8.0, 8.0, 1.0]


def test_adaptive_schedules_need_the_rule():
    with pytest.raises(TypeError, match="AdaptiveRule"):
        value_at(AdaptiveSchedule(kind="adaptive", start=0.5), 0, 10)


def _rule(**kw) -> AdaptiveRule:
    return AdaptiveRule(
        AdaptiveSchedule(
            kind="adaptive",
            **{"start": 0.1, "step": 0.1, "cap": 0.3, "patience": 2, "cooldown": 1, "min_delta": 0.001, **kw},
        )
    )


def test_adaptive_rule_patience_min_delta_cooldown_and_cap():
    rule = _rule()
    trace = []
    for acc in [0.50, 0.50, 0.5009, 0.50, 0.50, 0.50, 0.50, 0.50, 0.50]:
        trace.append((rule.observe(acc), round(rule.value, 6)))
    assert trace == [
        (False, 0.1),  # first evaluation: the best so far
        (False, 0.1),  # stalled 1
        (True, 0.2),  # +0.0009 is below min_delta: stalled 2 = patience -> raise
        (False, 0.2),  # cool-down: not counted
        (False, 0.2),  # stalled 1
        (True, 0.3),  # stalled 2 -> raise to the cap
        (False, 0.3),  # cool-down
        (False, 0.3),  # stalled 1
        (False, 0.3),  # stalled 2, but at the cap
    ]


def test_adaptive_rule_improvement_resets_the_count():
    rule = _rule(cooldown=0)
    for acc in [0.5, 0.5, 0.6, 0.6, 0.7, 0.7]:
        assert not rule.observe(acc)
    assert rule.observe(0.7) and rule.value == pytest.approx(0.2)


def test_adaptive_state_survives_a_resume(tmp_path):
    seq = [0.5, 0.5, 0.5, 0.51, 0.51, 0.51, 0.51, 0.4, 0.4]
    straight = _rule()
    values = []
    for acc in seq:
        straight.observe(acc)
        values.append(straight.value)
    first = _rule()
    for acc in seq[:3]:
        first.observe(acc)
    torch.save(first.state_dict(), tmp_path / "ckpt.pt")
    json.dumps(first.state_dict())
    resumed = _rule()
    resumed.load_state_dict(torch.load(tmp_path / "ckpt.pt", weights_only=True))
    for acc in seq[3:]:
        resumed.observe(acc)
    assert resumed.state_dict() == straight.state_dict()
    fresh = _rule()
    for acc in seq[3:]:
        fresh.observe(acc)
    assert fresh.state_dict() != straight.state_dict()  # without the state the run would differ


def test_distill_schedules_resolve_all_three_values():
    cfg = _cfg(
        epochs=10,
        temperature=ISSUE_EXAMPLE,
        hard_weight=0.25,
        soft_weight={"kind": "adaptive", "start": 0.5, "step": 0.25, "cap": 1.0, "patience": 1, "cooldown": 0},
    )
    sched = DistillSchedules(cfg)
    assert sched.values(6) == {"temperature": 5.0, "soft_weight": 0.5, "hard_weight": 0.25}
    assert sched.observe(0.9) == [] and sched.observe(0.9) == ["soft_weight"]
    assert sched.values(7)["soft_weight"] == 0.75
    other = DistillSchedules(cfg)
    other.load_state_dict(sched.state_dict())
    assert other.values(7) == sched.values(7)
