"""`edgekd devices check` names the numpy/TensorRT pair that is known not to work together."""

import pytest

from edgekd.config import DeviceConfig
from edgekd.fleet.check import assess, numpy_tensorrt_warning


@pytest.mark.parametrize(
    "numpy, trt, bad",
    [
        ("1.24.4", "8.5.2.2", True),
        ("2.0.1", "8.5.3.1", True),
        ("1.23.5", "8.5.2.2", False),
        ("1.24.4", "8.6.1.6", False),
        ("1.26.4", "10.3.0", False),
        (None, "8.5.2.2", False),
    ],
)
def test_known_bad_numpy_tensorrt_pair(numpy, trt, bad):
    assert (numpy_tensorrt_warning(numpy, trt) is not None) == bad


def test_device_check_reports_the_versions_and_the_warning():
    device = DeviceConfig(host="h", kind="jetson-agx-xavier", record_power_mode=False)
    device.name = "xav"
    libs = {
        "numpy": {"version": "1.24.4", "error": None},
        "tensorrt": {"version": "8.5.2.2", "error": None},
        "pycuda": {"version": "2022.2", "error": None},
        "onnxruntime": {"version": None, "error": "ImportError: no"},
    }
    report = assess(device, {"python": "3.8.10", "libraries": libs, "gpu": "Xavier", "free_disk_gb": 20.0})
    lines = report.summary()
    assert "numpy 1.24.4" in lines[1] and "tensorrt 8.5.2.2" in lines[1]
    assert report.ok and any("known-bad pair" in w and "#2557" in w for w in report.warnings)
