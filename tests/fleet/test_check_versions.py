"""`edgekd devices check` names the numpy/TensorRT pair that is known not to work together."""

import contextlib

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


def _xavier_probe(pycuda_error: str | None) -> dict:
    libs = {
        "numpy": {"version": "1.17.4", "error": None},
        "tensorrt": {"version": "8.5.2.2", "error": None},
        "pycuda": {"version": None if pycuda_error else "2024.1", "error": pycuda_error},
        "onnxruntime": {"version": None, "error": "ModuleNotFoundError: No module named 'onnxruntime'"},
    }
    return {"python": "3.8.10", "libraries": libs, "gpu": None, "free_disk_gb": 20.0}


@pytest.mark.parametrize(
    "error",
    [
        "RuntimeError: module compiled against API version 0x10 but this version of numpy is 0xd",
        "ImportError: numpy.core.multiarray failed to import",
    ],
)
def test_pycuda_built_against_a_newer_numpy_is_named_with_its_fix(error):
    """JetPack 5's numpy 1.17 and a pip-built pycuda >= 2024.1.2 (issue 21 fault 2)."""
    device = DeviceConfig(host="h", kind="jetson-agx-xavier", record_power_mode=False)
    device.name = "xav"
    report = assess(device, _xavier_probe(error))
    (problem,) = report.problems
    assert "built against a newer numpy than this device's numpy 1.17.4" in problem and error in problem
    assert "--no-build-isolation" in problem and "'pycuda<2024.1.2'" in problem and "\n" not in problem


def test_a_pycuda_that_is_simply_missing_gets_the_install_line():
    device = DeviceConfig(host="h", kind="jetson-agx-xavier", record_power_mode=False)
    device.name = "xav"
    (problem,) = assess(device, _xavier_probe("ModuleNotFoundError: No module named 'pycuda'")).problems
    assert problem.startswith("pycuda is not importable") and "no-build-isolation" not in problem


@pytest.mark.parametrize("version, refused", [("9.2.0", True), ("8.6.2", False), ("10.3.0", False), ("8.4.1", True)])
def test_device_check_refuses_the_tensorrt_releases_the_builder_refuses(version, refused):
    from edgekd.ondevice.trt_options import api_family

    device = DeviceConfig(host="h", kind="jetson-agx-orin", record_power_mode=False)
    device.name = "orin"
    probe = _xavier_probe(None)
    probe["libraries"]["tensorrt"]["version"] = version
    probe["gpu"] = "Orin"
    assert (not assess(device, probe).ok) == refused
    with pytest.raises(ValueError) if refused else contextlib.nullcontext():
        api_family(version)
