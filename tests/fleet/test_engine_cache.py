"""The host's engine cache, keyed by (ONNX sha256, options, device kind, TensorRT version)."""

import json
import re

import pytest

from edgekd.config import DeviceConfig
from edgekd.errors import EdgekdError
from edgekd.fleet import engine_cache
from edgekd.fleet.ship import _prebuilt_engines
from edgekd.ondevice import trt_options
from edgekd.ondevice.files import sha256_file
from edgekd.ondevice.trt_options import BuildOptions

KIND = "jetson-agx-xavier"


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
        sha256_file(str(engine)),
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
    cached = engine_cache.store(fake_engine(tmp_path, "student_trt_fp16", "a" * 64, opts), KIND)
    assert cached.parent == cache / "engines" and cached.read_bytes() == b"student_trt_fp16"
    assert engine_cache.lookup("a" * 64, opts, "jetson-agx-xavier", "8.5.2.2") == cached
    assert engine_cache.lookup("a" * 64, opts, "jetson-agx-xavier", "8.6.1") is None
    assert engine_cache.lookup("a" * 64, opts, "jetson-orin", "8.5.2.2") is None
    assert engine_cache.lookup("a" * 64, BuildOptions("int8"), "jetson-agx-xavier", "8.5.2.2") is None
    assert engine_cache.lookup("b" * 64, opts, "jetson-agx-xavier", "8.5.2.2") is None


def test_engines_only_finds_cached_engines_or_names_the_missing_one(run_dir_template, tmp_path):
    dev = DeviceConfig(host="j", kind="jetson-agx-xavier", tensorrt={"precisions": ["fp16"]})
    dev.name = "xav2"
    sha = sha256_file(str(run_dir_template / "export" / "student.onnx"))
    engine_cache.store(fake_engine(tmp_path, "student_trt_fp16", sha, BuildOptions("fp16")), KIND)
    with pytest.raises(
        EdgekdError, match=r"no cached fp16 engine of export/teacher.onnx for jetson-agx-xavier with TensorRT 8.5.2.2"
    ):
        _prebuilt_engines(run_dir_template, dev, "8.5.2.2")
    teacher_sha = sha256_file(str(run_dir_template / "export" / "teacher.onnx"))
    engine_cache.store(fake_engine(tmp_path, "teacher_trt_fp16", teacher_sha, BuildOptions("fp16")), KIND)
    found = _prebuilt_engines(run_dir_template, dev, "8.5.2.2")
    assert set(found) == {"student_trt_fp16", "teacher_trt_fp16"}
    with pytest.raises(EdgekdError, match="TensorRT 8.6.1"):
        _prebuilt_engines(run_dir_template, dev, "8.6.1")


def files_under(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def tamper(engine, **fields):
    sidecar = json.loads(engine.with_suffix(".json").read_text())
    sidecar.update(fields)
    engine.with_suffix(".json").write_text(json.dumps(sidecar))
    return engine


@pytest.mark.parametrize(
    "fields, fragment",
    [
        ({"source_sha256": "{outside}/x/y"}, "source_sha256"),
        ({"source_sha256": "A" * 64}, "source_sha256"),
        ({"precision": "/../../../{outside}/p"}, "precision"),
        ({"device_kind": "jetson-orin"}, "configured as 'jetson-agx-xavier'"),
        ({"device_kind": "../../x"}, "device_kind"),
        ({"tensorrt": "8.5/../../../x"}, "tensorrt"),
        ({"engine_sha256": "b" * 64}, "engine_sha256 does not match"),
        ({"options": {**BuildOptions("fp16").as_dict(), "workspace_mb": "1024/../x"}}, "options.workspace_mb"),
        ({"options": {**BuildOptions("fp16").as_dict(), "extra": 1}}, "options are"),
        ({"options": BuildOptions("int8").as_dict()}, "differs from precision"),
        ({"options": {**BuildOptions("fp16").as_dict(), "max_batch": 0}}, "min_batch <= opt_batch"),
        ({"schema": "edgekd.engine/0"}, "schema"),
    ],
)
def test_a_malicious_sidecar_is_refused_and_writes_nothing(tmp_path, cache, fields, fragment):
    """The device writes the sidecar: a path, a foreign device kind or bad options in it never reach the file system."""
    outside = tmp_path / "outside"
    fields = {k: v.replace("{outside}", str(outside)) if isinstance(v, str) else v for k, v in fields.items()}
    results = tmp_path / "results"
    results.mkdir()
    engine = tamper(fake_engine(results, "student_trt_fp16", "a" * 64, BuildOptions("fp16")), **fields)
    before = files_under(tmp_path)
    with pytest.raises(EdgekdError, match=re.escape(fragment)):
        engine_cache.store(engine, KIND)
    assert files_under(tmp_path) == before and not outside.exists()


def test_a_symlinked_sidecar_or_engine_is_refused(tmp_path, cache):
    results = tmp_path / "results"
    results.mkdir()
    secret = tmp_path / "secret.json"
    engine = fake_engine(results, "student_trt_fp16", "a" * 64, BuildOptions("fp16"))
    engine.with_suffix(".json").rename(secret)
    engine.with_suffix(".json").symlink_to(secret)
    with pytest.raises(EdgekdError, match="not a regular file"):
        engine_cache.store(engine, KIND)
    assert not cache.exists()
