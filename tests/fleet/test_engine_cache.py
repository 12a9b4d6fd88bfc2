"""The host's engine cache, keyed by (ONNX sha256, options, device kind, TensorRT version)."""

import json

import pytest

from edgekd.config import DeviceConfig
from edgekd.errors import EdgekdError
from edgekd.fleet import engine_cache
from edgekd.fleet.ship import _prebuilt_engines
from edgekd.ondevice import trt_options
from edgekd.ondevice.trt_options import BuildOptions


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKD_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def fake_engine(folder, name, source_sha, opts, kind="jetson-agx-xavier", trt="8.5.2.2"):
    engine = folder / f"{name}.engine"
    engine.write_bytes(name.encode())
    sidecar = trt_options.make_sidecar(
        opts,
        trt,
        "Xavier",
        "7.2",
        kind,
        "student.onnx",
        source_sha,
        "0" * 64,
        inputs=[],
        outputs=[],
        dla=None,
        build_seconds=0.0,
        created="",
    )
    engine.with_suffix(".json").write_text(json.dumps(sidecar))
    return engine


def test_store_then_lookup(tmp_path, cache):
    opts = BuildOptions("fp16")
    cached = engine_cache.store(fake_engine(tmp_path, "student_trt_fp16", "a" * 64, opts))
    assert cached.parent == cache / "engines" and cached.read_bytes() == b"student_trt_fp16"
    assert engine_cache.lookup("a" * 64, opts, "jetson-agx-xavier", "8.5.2.2") == cached
    assert engine_cache.lookup("a" * 64, opts, "jetson-agx-xavier", "8.6.1") is None
    assert engine_cache.lookup("a" * 64, opts, "jetson-orin", "8.5.2.2") is None
    assert engine_cache.lookup("a" * 64, BuildOptions("int8"), "jetson-agx-xavier", "8.5.2.2") is None
    assert engine_cache.lookup("b" * 64, opts, "jetson-agx-xavier", "8.5.2.2") is None


def test_engines_only_finds_cached_engines_or_names_the_missing_one(run_dir_template, tmp_path):
    dev = DeviceConfig(host="j", kind="jetson-agx-xavier", tensorrt={"precisions": ["fp16"]})
    dev.name = "xav2"
    sha = trt_options.sha256_file(str(run_dir_template / "export" / "student.onnx"))
    engine_cache.store(fake_engine(tmp_path, "student_trt_fp16", sha, BuildOptions("fp16")))
    with pytest.raises(
        EdgekdError, match=r"no cached fp16 engine of export/teacher.onnx for jetson-agx-xavier with TensorRT 8.5.2.2"
    ):
        _prebuilt_engines(run_dir_template, dev, "8.5.2.2")
    teacher_sha = trt_options.sha256_file(str(run_dir_template / "export" / "teacher.onnx"))
    engine_cache.store(fake_engine(tmp_path, "teacher_trt_fp16", teacher_sha, BuildOptions("fp16")))
    found = _prebuilt_engines(run_dir_template, dev, "8.5.2.2")
    assert set(found) == {"student_trt_fp16", "teacher_trt_fp16"}
    with pytest.raises(EdgekdError, match="TensorRT 8.6.1"):
        _prebuilt_engines(run_dir_template, dev, "8.6.1")
