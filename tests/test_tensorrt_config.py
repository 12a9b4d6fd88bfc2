"""TensorRT options are checked when a pipeline or devices.yaml is loaded, with the checks the build applies."""

from pathlib import Path

import pytest
import yaml

from edgekd.config import load_devices, parse_pipeline
from edgekd.errors import EdgekdError

ROOT = Path(__file__).resolve().parents[1]
BASE = {"name": "t", "data": {"dataset": "digits"}, "teacher": {"model": "mlp"}, "student": {"model": "mlp"}}


def pipeline(tensorrt: dict):
    return parse_pipeline({**BASE, "tensorrt": tensorrt})


@pytest.mark.parametrize(
    "tensorrt, fragment",
    [
        ({"dla_core": 0}, "DLA needs static shapes"),
        ({"dla_core": 0, "static_shapes": True, "precisions": ["fp32"]}, "DLA runs fp16 or int8 only"),
        ({"min_batch": 4, "opt_batch": 2}, "min_batch <= opt_batch"),
    ],
)
def test_options_the_build_would_refuse_fail_at_load_time_in_one_line(tensorrt, fragment):
    with pytest.raises(EdgekdError, match=fragment) as info:
        pipeline(tensorrt)
    assert "\n" not in str(info.value) and "tensorrt" in str(info.value)


def test_dla_with_static_shapes_and_a_calibration_size_loads():
    cfg = pipeline({"dla_core": 1, "static_shapes": True, "precisions": ["fp16", "int8"], "calibration_images": 64})
    assert (cfg.tensorrt.dla_core, cfg.tensorrt.calibration_images) == (1, 64)


def test_shipped_pipeline_and_devices_example_pass_the_checks():
    data = yaml.safe_load((ROOT / "pipelines" / "imagefolder.yaml").read_text())
    pipeline(data["tensorrt"])
    devices = load_devices(ROOT / "examples" / "devices.yaml")
    dla = devices.get("xavier-01-dla").tensorrt
    assert dla.dla_core == 0 and dla.static_shapes


def test_devices_yaml_with_dla_but_dynamic_shapes_is_refused(tmp_path):
    path = tmp_path / "devices.yaml"
    path.write_text("devices:\n  x:\n    host: h\n    kind: jetson-agx-xavier\n    tensorrt:\n      dla_core: 0\n")
    with pytest.raises(EdgekdError, match="DLA needs static shapes"):
        load_devices(path)
