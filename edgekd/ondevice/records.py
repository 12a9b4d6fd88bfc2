"""Typed benchmark records: what the host and every device write to bench/<device>.json, and what the report reads.

Python 3.8, stdlib only (the device writes these too). `BenchDoc.from_dict` is the one reader: a bench
file that comes back from a device is untrusted input, so every field is type-checked and artifact ids
must be catalogue ids; anything else raises RecordError naming the field.
"""

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

from . import catalog
from .names import is_plain_name

BENCH_SCHEMA = "edgekd.bench/2"
STATUSES = ("done", "failed", "skipped")


class RecordError(ValueError):
    """A bench document that does not match the schema; the message names the field."""


def _check(value: Any, types: tuple, where: str, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if isinstance(value, bool) and bool not in types:
        raise RecordError("{}: expected {}, got a boolean".format(where, "/".join(t.__name__ for t in types)))
    if not isinstance(value, types):
        raise RecordError("{}: expected {}, got {!r}".format(where, "/".join(t.__name__ for t in types), value))
    return value


def _num(doc: Dict[str, Any], key: str, where: str, optional: bool = False) -> Optional[float]:
    value = _check(doc.get(key), (int, float), f"{where}.{key}", optional)
    return None if value is None else float(value)


def _int(doc: Dict[str, Any], key: str, where: str, optional: bool = False) -> Optional[int]:
    return _check(doc.get(key), (int,), f"{where}.{key}", optional)


def _str(doc: Dict[str, Any], key: str, where: str, optional: bool = False) -> Optional[str]:
    return _check(doc.get(key), (str,), f"{where}.{key}", optional)


@dataclass
class Latency:
    """Timing of one artifact at one batch size (milliseconds per batch)."""

    batch_size: int
    runs: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    throughput_ips: float
    round_p50_ms: List[float] = field(default_factory=list)
    spread: float = 0.0  # (slowest - fastest round median) / mean of round medians
    stable: bool = True  # False when rounds disagree or the machine was busy (see bench conditions)
    unstable: Optional[str] = None  # why not stable, e.g. "rounds differ by 31% (limit 25%)"
    others_cores: Optional[float] = None  # CPU other processes used while this figure was taken (None: unknown)
    power_w: Optional[float] = None  # mean board power during this figure's rounds (None: no power rails)
    energy_mj: Optional[float] = None  # power_w x mean latency / batch size: millijoules per image
    gpu_compute_ms: Optional[float] = None  # median GPU compute time per batch (TensorRT), beside the wall clock

    @classmethod
    def from_dict(cls, doc: Dict[str, Any], where: str) -> "Latency":
        _check(doc, (dict,), where)
        nums = {
            k: _num(doc, k, where)
            for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "max_ms", "throughput_ips")
        }
        rounds = _check(doc.get("round_p50_ms", []), (list,), where + ".round_p50_ms")
        return cls(
            batch_size=_int(doc, "batch_size", where),
            runs=_int(doc, "runs", where),
            round_p50_ms=[float(_check(r, (int, float), where + ".round_p50_ms[]")) for r in rounds],
            spread=_num(doc, "spread", where, optional=True) or 0.0,
            stable=bool(_check(doc.get("stable", True), (bool,), where + ".stable")),
            unstable=_str(doc, "unstable", where, optional=True),
            others_cores=_num(doc, "others_cores", where, optional=True),
            power_w=_num(doc, "power_w", where, optional=True),
            energy_mj=_num(doc, "energy_mj", where, optional=True),
            gpu_compute_ms=_num(doc, "gpu_compute_ms", where, optional=True),
            **nums,
        )


@dataclass
class BatchTop1:
    """Top-1 of an artifact whose output depends on the batch (dynamic int8: activation scales per batch)
    when the validation set is run in chunks of `batch_size` images."""

    batch_size: int
    top1: float

    @classmethod
    def from_dict(cls, doc: Dict[str, Any], where: str) -> "BatchTop1":
        _check(doc, (dict,), where)
        return cls(_int(doc, "batch_size", where), _num(doc, "top1", where))


@dataclass
class Accuracy:
    """Accuracy on the validation set; agreement (%) and KL are against the teacher's logits.

    `batch_size`: the chunk the validation images were run in for these figures (absent in older files);
    `by_batch`: for dynamic int8, the top-1 at every benchmark batch size."""

    n: int
    top1: float
    top5: float
    agreement: Optional[float] = None
    kl: Optional[float] = None
    batch_size: Optional[int] = None
    by_batch: List[BatchTop1] = field(default_factory=list)

    @classmethod
    def from_dict(cls, doc: Dict[str, Any], where: str) -> "Accuracy":
        _check(doc, (dict,), where)
        by_batch = _check(doc.get("by_batch", []), (list,), where + ".by_batch")
        return cls(
            n=_int(doc, "n", where),
            top1=_num(doc, "top1", where),
            top5=_num(doc, "top5", where),
            agreement=_num(doc, "agreement", where, optional=True),
            kl=_num(doc, "kl", where, optional=True),
            batch_size=_int(doc, "batch_size", where, optional=True),
            by_batch=[BatchTop1.from_dict(b, f"{where}.by_batch[{i}]") for i, b in enumerate(by_batch)],
        )


@dataclass
class RuntimeInfo:
    """What ran the artifact: backend name and version, provider (CPU, CUDA, GPU name, DLA core), threads used."""

    name: str
    version: str
    provider: str
    threads: Optional[int] = None

    @classmethod
    def from_dict(cls, doc: Dict[str, Any], where: str) -> "RuntimeInfo":
        _check(doc, (dict,), where)
        return cls(
            _str(doc, "name", where),
            _str(doc, "version", where),
            _str(doc, "provider", where),
            _int(doc, "threads", where, optional=True),
        )


@dataclass
class ArtifactRecord:
    """One artifact benchmarked on one device. `id` is a catalogue id; `path` is run-dir relative; `name` is the
    ONNX file's name for the rows of a file given to `edgekd bench` (catalog.per_file), else None."""

    id: str
    status: str
    path: str
    reason: Optional[str] = None
    sha256: Optional[str] = None
    size_bytes: Optional[int] = None
    params: Optional[int] = None
    macs: Optional[int] = None
    runtime: Optional[RuntimeInfo] = None
    latency: List[Latency] = field(default_factory=list)
    accuracy: Optional[Accuracy] = None
    note: Optional[str] = None  # what a reader must know about a done record, e.g. that it is a calibrated fallback
    name: Optional[str] = None

    @property
    def row(self) -> catalog.Artifact:
        return catalog.get(self.id)

    @property
    def key(self) -> str:
        """The id, and for a given file's rows its name too (`<name>/<id>`): unique in a bench document."""
        return self.id if self.name is None else f"{self.name}/{self.id}"

    def latency_at(self, batch_size: int) -> Optional[Latency]:
        return next((lat for lat in self.latency if lat.batch_size == batch_size), None)

    @classmethod
    def from_dict(cls, doc: Dict[str, Any], where: str) -> "ArtifactRecord":
        _check(doc, (dict,), where)
        art_id = _str(doc, "id", where)
        if art_id not in catalog.BY_ID:
            raise RecordError(
                "{}.id: {!r} is not an artifact id; valid ids: {}".format(where, art_id, ", ".join(catalog.BY_ID))
            )
        name = _str(doc, "name", f"{where}[{art_id}]", optional=True)
        if catalog.per_file(art_id) != (name is not None) or (name is not None and not is_plain_name(name)):
            want = "the plain name of the ONNX file" if catalog.per_file(art_id) else "absent (not a given file's row)"
            raise RecordError(f"{where}[{art_id}].name: {name!r}; expected {want}")
        where = f"{where}[{art_id if name is None else name + '/' + art_id}]"
        status = _str(doc, "status", where)
        if status not in STATUSES:
            raise RecordError("{}.status: {!r}; valid: {}".format(where, status, ", ".join(STATUSES)))
        sha = _str(doc, "sha256", where, optional=True)
        if sha is not None and not is_sha256(sha):
            raise RecordError(f"{where}.sha256: not 64 hex characters")
        runtime = doc.get("runtime")
        accuracy = doc.get("accuracy")
        lat = _check(doc.get("latency", []), (list,), where + ".latency")
        return cls(
            id=art_id,
            status=status,
            path=_str(doc, "path", where),
            reason=_str(doc, "reason", where, optional=True),
            sha256=sha,
            size_bytes=_int(doc, "size_bytes", where, optional=True),
            params=_int(doc, "params", where, optional=True),
            macs=_int(doc, "macs", where, optional=True),
            runtime=RuntimeInfo.from_dict(runtime, where + ".runtime") if runtime is not None else None,
            latency=[Latency.from_dict(x, f"{where}.latency[{i}]") for i, x in enumerate(lat)],
            accuracy=Accuracy.from_dict(accuracy, where + ".accuracy") if accuracy is not None else None,
            note=_str(doc, "note", where, optional=True),
            name=name,
        )


@dataclass
class BenchDoc:
    """bench/<device>.json: the device, when and how it was measured, the named reference and one record per artifact.

    `system` describes the machine (name, kind, CPU, GPU, power mode, versions); `conditions` what
    might have disturbed the figures (load, clocks, temperatures); `settings` how figures were taken.
    """

    device: str
    kind: str
    created: str
    reference: str
    system: Dict[str, Any] = field(default_factory=dict)
    settings: Dict[str, Any] = field(default_factory=dict)
    conditions: Dict[str, Any] = field(default_factory=dict)
    artifacts: List[ArtifactRecord] = field(default_factory=list)
    schema: str = BENCH_SCHEMA

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def get(self, artifact_id: str, name: Optional[str] = None) -> Optional[ArtifactRecord]:
        return next((a for a in self.artifacts if (a.id, a.name) == (artifact_id, name)), None)

    @property
    def unstable(self) -> List[str]:
        """Every figure marked unstable, as "<device>: <id> batch <n>: <why>" (what --strict fails on)."""
        return [
            "{}: {} batch {}: {}".format(self.device, a.key, lat.batch_size, lat.unstable or "unstable")
            for a in self.artifacts
            for lat in a.latency
            if not lat.stable
        ]

    @classmethod
    def from_dict(cls, doc: Any, where: str = "bench") -> "BenchDoc":
        _check(doc, (dict,), where)
        if doc.get("schema") != BENCH_SCHEMA:
            raise RecordError("{}: schema {!r}, expected {!r}".format(where, doc.get("schema"), BENCH_SCHEMA))
        reference = _str(doc, "reference", where)
        if reference not in catalog.BY_ID:
            raise RecordError(f"{where}.reference: {reference!r} is not an artifact id")
        arts = _check(doc.get("artifacts"), (list,), where + ".artifacts")
        records = [ArtifactRecord.from_dict(a, f"{where}.artifacts") for a in arts]
        keys = [r.key for r in records]
        if len(set(keys)) != len(keys):
            raise RecordError(f"{where}.artifacts: an artifact id appears twice")
        return cls(
            device=_str(doc, "device", where),
            kind=_str(doc, "kind", where),
            created=_str(doc, "created", where),
            reference=reference,
            system=_check(doc.get("system", {}), (dict,), where + ".system"),
            settings=_check(doc.get("settings", {}), (dict,), where + ".settings"),
            conditions=_check(doc.get("conditions", {}), (dict,), where + ".conditions"),
            artifacts=records,
        )


def is_sha256(text: str) -> bool:
    """64 lowercase hex characters."""
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)
