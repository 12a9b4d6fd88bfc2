"""`edgekd ship RUN_DIR --device NAME`: copy a bundle to a device, build and benchmark there, bring the results back.

On the device, under `workdir`:

    objects/<sha256>       content-addressed files (uploaded to staging/, then moved here: never half a file)
    bundles/<bundle id>/   the bundle, hard links into objects/, renamed into place once complete
    results/<bundle id>/   what edgekd_device.bench wrote, renamed into place once complete
    cache/                 engine and timing caches kept between runs

Each step is skipped when its result is already there, so a ship interrupted at any point
completes when run again, and shipping an unchanged run copies and rebuilds nothing.
Results come back to a temporary folder in the run dir and are renamed into
`tensorrt/<device>/` and `bench/<device>.json`.
"""

from __future__ import annotations

import datetime
import json
import os
import posixpath
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edgekd.config import DeviceConfig
from edgekd.errors import EdgekdError
from edgekd.fleet import engine_cache
from edgekd.fleet.bundle import Bundle, build_options, make_bundle, plan_engines, run_manifest, shippable
from edgekd.fleet.check import assess, probe_device
from edgekd.fleet.device_results import check_bench, check_sidecar, check_tree, inside
from edgekd.fleet.ssh import Ssh, remote_command
from edgekd.manifest import Manifest
from edgekd.ondevice.files import sha256_file
from edgekd.ondevice.trt_options import BuildOptions, validate_options
from edgekd.rundir import RunDir

SHIP_SCHEMA = "edgekd.ship/1"


@dataclass
class ShipResult:
    """What a ship did: transfers, whether the device ran, and where the results are."""

    device: str
    bundle_id: str
    uploaded_files: int = 0
    uploaded_bytes: int = 0
    ran_bench: bool = False
    downloaded: bool = False
    bench_json: Path | None = None
    engine_dir: Path | None = None
    artifacts: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class RemoteLayout:
    """Paths in the device's workdir (relative ones are under the login's home)."""

    def __init__(self, workdir: str) -> None:
        self.root = workdir.rstrip("/") or "/"
        self.objects = posixpath.join(self.root, "objects")
        self.staging = posixpath.join(self.root, "staging")
        self.bundles = posixpath.join(self.root, "bundles")
        self.results = posixpath.join(self.root, "results")
        self.cache = posixpath.join(self.root, "cache")
        self.lock = posixpath.join(self.root, ".lock")

    def bundle(self, bundle_id: str) -> str:
        return posixpath.join(self.bundles, bundle_id)

    def result(self, bundle_id: str) -> str:
        return posixpath.join(self.results, bundle_id)


def _probe_and_list(ssh: Ssh, r: RemoteLayout) -> tuple[dict, set[str], set[str], set[str]]:
    """(probe, objects, bundles, results) of the device in one connection; clears what interrupted uploads left in staging."""
    listing = [
        ["rm", "-rf", r.staging],
        ["mkdir", "-p", r.objects, r.staging, r.bundles, r.results, r.cache],
        ["ls", "-1", r.objects],
        ["echo", "--"],
        ["ls", "-1", r.bundles],
        ["echo", "--"],
        ["ls", "-1", r.results],
        ["echo", "--"],
    ]
    lines, found = probe_device(ssh, listing)
    parts: list[set[str]] = [set()]
    for line in lines:
        if line == "--":
            parts.append(set())
        elif line.strip():
            parts[-1].add(line.strip())
    if len(parts) != 4:
        raise EdgekdError(f"{ssh.where()}: unexpected listing of {r.root}: {lines[:5]}")
    return found, parts[0], parts[1], parts[2]


def _stage_objects(
    ssh: Ssh, r: RemoteLayout, objects: dict[str, Path | bytes], scratch: Path
) -> tuple[int, list[list[str]]]:
    """Copy `objects` (sha256 -> file or bytes) into the device's staging/; returns the bytes sent and the
    remote commands that move them into objects/ (renames: objects/ never holds half a file)."""
    token = "up-" + secrets.token_hex(6)
    folder = scratch / token
    folder.mkdir()
    sent = 0
    for digest, src in objects.items():
        dst = folder / digest
        if isinstance(src, bytes):
            dst.write_bytes(src)
        else:
            try:
                os.link(src, dst)
            except OSError:
                shutil.copyfile(src, dst)
        sent += dst.stat().st_size
    ssh.upload(folder, r.staging)
    staged = posixpath.join(r.staging, token)
    return sent, [
        ["mv", "-f", "-t", r.objects, *(posixpath.join(staged, d) for d in sorted(objects))],
        ["rmdir", staged],
    ]


VERIFY_OBJECTS = """import hashlib, sys
for digest, path in zip(sys.argv[1::2], sys.argv[2::2]):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != digest:
        sys.exit("object " + path + " does not hash to its name: remove it and ship again")
"""
"""Run by the device's python before a bundle is assembled: every object it links must still be what its name says."""


def _assemble(r: RemoteLayout, bundle: Bundle, python: str) -> list[list[str]]:
    """Commands that re-hash the bundle's objects on the device, hard-link them out of objects/ into staging/,
    then rename that to bundles/<id>."""
    staged = posixpath.join(r.staging, "bundle-" + bundle.id)
    objects = sorted(set(bundle.digests.values()))
    verify = [python, "-c", VERIFY_OBJECTS, *(x for d in objects for x in (d, posixpath.join(r.objects, d)))]
    dirs = sorted({posixpath.join(staged, posixpath.dirname(rel)) for rel in bundle.digests})
    links = [
        ["ln", "-f", posixpath.join(r.objects, digest), posixpath.join(staged, rel)]
        for rel, digest in sorted(bundle.digests.items())
    ]
    return [verify, ["mkdir", "-p", *dirs], *links, ["mv", "-T", staged, r.bundle(bundle.id)]]


def _bench(ssh: Ssh, r: RemoteLayout, bundle_id: str) -> list[str]:
    """The command that builds and benchmarks on the device (the bundle alone on PYTHONPATH)."""
    bundle = r.bundle(bundle_id)
    return [
        "env",
        f"PYTHONPATH={bundle}",
        ssh.device.python,
        "-m",
        "edgekd_device.bench",
        posixpath.join(bundle, "job.json"),
        "--out",
        r.result(bundle_id),
        "--cache-dir",
        r.cache,
    ]


def _local_record(run: RunDir, device: str) -> dict | None:
    path = run.ship_record(device)
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def _is_current(run: RunDir, device: str, bundle_id: str) -> bool:
    """True when this run dir already holds the results of `bundle_id` on `device`, untouched."""
    record = _local_record(run, device)
    bench = run.bench_file(device)
    return bool(
        record
        and record.get("bundle_id") == bundle_id
        and bench.is_file()
        and sha256_file(str(bench)) == record.get("bench_sha256")
    )


def _download(ssh: Ssh, r: RemoteLayout, run: RunDir, bundle: Bundle, scratch: Path, engines_only: bool) -> None:
    """Fetch results/<id> into `scratch` (laid out like a run directory), then rename its engine folder and
    bench file into the run's."""
    name = ssh.device.name
    ssh.download(r.result(bundle.id), scratch)
    fetched = RunDir(inside(scratch / bundle.id, scratch, "download"))
    bench = fetched.bench_file(name)
    engines = fetched.engine_dir(name)
    if not bench.is_file():
        raise EdgekdError(
            f"{ssh.where()}: {r.result(bundle.id)} holds no {fetched.relative(bench)}; remove that folder on the device and ship again"
        )
    check_tree(
        fetched.root, f"results from {ssh.where()}"
    )  # device output is untrusted: no links, odd names or devices
    check_bench(bench, name, bundle.digests)
    engines.mkdir(parents=True, exist_ok=True)
    for engine in sorted(engines.glob("*.engine")):
        if engine.with_suffix(".json").exists():
            check_sidecar(engine, ssh.device.kind)
    record = {
        "schema": SHIP_SCHEMA,
        "device": name,
        "kind": ssh.device.kind,
        "host": ssh.destination,
        "bundle_id": bundle.id,
        "engines_only": engines_only,
        "bench_sha256": sha256_file(str(bench)),
        "shipped": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if os.path.lexists(fetched.ship_record(name)):  # the host writes that record, never the device
        raise EdgekdError(
            f"results from {ssh.where()}: {fetched.relative(fetched.ship_record(name))} is the host's record; refused"
        )
    fetched.ship_record(name).write_text(json.dumps(record, indent=2))
    dest = run.engine_dir(name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    run.bench_file(name).parent.mkdir(exist_ok=True)
    if dest.exists():
        os.rename(dest, scratch / "previous")
    os.rename(engines, dest)
    os.replace(bench, run.bench_file(name))


def _prebuilt_engines(
    run_dir: Path, device: DeviceConfig, trt_version: str, manifest: Manifest | None = None
) -> dict[str, Path]:
    """Cached engines for every planned engine of `device`, or an EdgekdError naming the first one missing.

    Each is looked up by the source the device built it from on `trt_version` (the fp16 ONNX of a strongly
    typed fp16 build; the ONNX and the run's calibration set of a calibrated DLA int8 build). A Q/DQ int8 engine
    that never built on this kind stands in as its calibrated fallback when that one is cached (keyed by the fp32
    ONNX and the calibration set, its sidecar saying why): the device then measures the fallback, not the Q/DQ."""
    found = {}
    manifest = manifest or run_manifest(run_dir)
    calibration = manifest.vouched_sha256().get("calib_set")
    dla = device.tensorrt.dla_core is not None
    for entry in plan_engines(run_dir, shippable(run_dir, manifest), device.tensorrt.precisions, dla):
        opts = build_options(device, entry.precision)
        onnx, source = entry.build_source(opts, trt_version, calibration)
        path = engine_cache.lookup(source, opts, device.kind, trt_version)
        if path is None and entry.fallback and calibration:
            calibrated = BuildOptions.from_dict({**opts.as_dict(), "calibrated": True})
            _, fallback_source = entry.build_source(calibrated, trt_version, calibration)
            fallback = engine_cache.lookup(fallback_source, calibrated, device.kind, trt_version)
            if fallback is not None:
                found[entry.fallback] = fallback
                continue
        if path is None:
            raise EdgekdError(
                f"--engines-only: no cached {entry.precision} engine of {onnx} for {device.kind} with TensorRT "
                f"{trt_version} in {engine_cache.cache_root() / 'engines'}; ship once without --engines-only "
                f"to a device of this kind"
            )
        found[entry.id] = path
    if not found:
        raise EdgekdError(
            f"--engines-only: {run_dir} has no ONNX files to match engines to (precisions {device.tensorrt.precisions})"
        )
    return found


BundleMaker = Callable[[dict], "tuple[Bundle, list[str]]"]
"""Makes the bundle (and the warnings about what it leaves out) from the device's probe."""


def ship(run_dir: str | Path, device: DeviceConfig, engines_only: bool = False, force: bool = False) -> ShipResult:
    """Benchmark `run_dir`'s artifacts on `device`: results land in tensorrt/<device>/ and bench/<device>.json.

    engines_only: deploy engines cached from an earlier ship to a device of the same kind and
    TensorRT version instead of building them. force: re-run the device benchmark even when
    the device holds results for this exact bundle.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise EdgekdError(f"{run_dir}: run directory not found")
    check_build_options(device)
    if engines_only and "tensorrt" not in device.backends:
        raise EdgekdError(
            f"--engines-only: device '{device.name}' has no tensorrt backend (backends: {device.backends})"
        )

    def bundle_for(found: dict) -> tuple[Bundle, list[str]]:
        manifest = run_manifest(run_dir)  # read once, under the run's lock: the bundle and the engine lookup share it
        prebuilt = None
        if engines_only:
            prebuilt = _prebuilt_engines(run_dir, device, found["libraries"]["tensorrt"]["version"], manifest)
        return make_bundle(run_dir, device, prebuilt, manifest)

    return deliver(RunDir(run_dir), device, bundle_for, force, engines_only)


def check_build_options(device: DeviceConfig) -> None:
    """The device's TensorRT options for each of its precisions, checked as the device will (one-line EdgekdError)."""
    for precision in device.tensorrt.precisions if "tensorrt" in device.backends else []:
        problems = validate_options(build_options(device, precision))
        if problems:
            raise EdgekdError(f"devices.yaml: device '{device.name}': tensorrt: {problems[0]}")


def deliver(
    run: RunDir, device: DeviceConfig, bundle_for: BundleMaker, force: bool = False, engines_only: bool = False
) -> ShipResult:
    """Copy the bundle `bundle_for(probe)` makes to `device`, run its bench there, bring the results back into
    `run` (tensorrt/<device>/, bench/<device>.json; checked first: they are untrusted) and cache the engines built.

    `run` is a run directory or any folder laid out like one (`edgekd bench FILE.onnx --device`). Holds the
    folder's lock and the device workdir's. force: re-run the bench even when the device holds its results.
    """
    with run.locked(f"edgekd ship --device {device.name}"):
        ssh = Ssh(device)
        r = RemoteLayout(device.workdir)
        with ssh.holding_lock(r.lock):  # one ship at a time in a device's workdir, from any host
            return _ship_locked(run, bundle_for, ssh, r, device, engines_only, force)


def _ship_locked(
    run: RunDir,
    bundle_for: BundleMaker,
    ssh: Ssh,
    r: RemoteLayout,
    device: DeviceConfig,
    engines_only: bool,
    force: bool,
) -> ShipResult:
    found, objects, bundles, results = _probe_and_list(ssh, r)
    report = assess(device, found)
    report.require_ok()
    bundle, warnings = bundle_for(found)
    result = ShipResult(device.name, bundle.id, warnings=warnings + report.warnings)

    scratch = run.root / f".ship-tmp-{secrets.token_hex(4)}"
    scratch.mkdir()
    try:
        steps: list[list[str]] = []
        if bundle.id not in bundles:
            missing = {d: src for d, src in bundle.objects().items() if d not in objects}
            if missing:
                result.uploaded_bytes, move = _stage_objects(ssh, r, missing, scratch)
                result.uploaded_files = len(missing)
                steps += move
            steps += _assemble(r, bundle, device.python)
        if force and bundle.id in results:
            steps.append(["rm", "-rf", r.result(bundle.id)])
            results.discard(bundle.id)
        if bundle.id not in results:
            steps.append(_bench(ssh, r, bundle.id))
            result.ran_bench = True
        if steps:
            ssh.run(
                remote_command(*steps),
                "placing the bundle and running the benchmark" if result.ran_bench else "placing the bundle",
            )
        if result.ran_bench or not _is_current(run, device.name, bundle.id):
            _download(ssh, r, run, bundle, scratch, engines_only)
            result.downloaded = True
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    result.bench_json = run.bench_file(device.name)
    result.engine_dir = run.engine_dir(device.name)
    result.artifacts = json.loads(result.bench_json.read_text())["artifacts"]
    if not engines_only:
        for engine in sorted(result.engine_dir.glob("*.engine")):
            if engine.with_suffix(".json").is_file():
                engine_cache.store(engine, device.kind)
    return result
