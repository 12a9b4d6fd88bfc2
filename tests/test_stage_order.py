"""Every artifact a stage takes is made by a stage that runs before it (issue 21: the tensorrt stage ran before the
benchmark stage wrote the calibration set, so a first host DLA int8 build had none)."""

from edgekd.ondevice import catalog
from edgekd.stages import all_stages


def test_every_input_of_a_stage_is_made_by_an_earlier_stage():
    order = [stage.name for stage in all_stages()]
    late = []
    for i, stage in enumerate(all_stages()):
        for art_id in (*stage.needs, *stage.uses):
            maker = catalog.get(art_id).stage
            if maker not in order[:i]:
                late.append(f"{stage.name} takes {art_id}, made by {maker}")
    assert late == []


def test_the_calibration_set_exists_before_any_engine_is_built():
    tensorrt = next(s for s in all_stages() if s.name == "tensorrt")
    assert "calib_set" in tensorrt.uses
    assert catalog.get("calib_set").stage == "export"
