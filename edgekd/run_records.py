"""Typed records that one stage writes and another part of edgekd reads: the producer and every reader use
the same class, and `from_dict` is the one validating reader (a RecordError names the bad field).

- `DistillChoice`: distill/settings.json, the distill settings the sweep chose (qat's KD reads it).
- `ValOutcome`: which validation images a trained student classified right, in the distill and baseline stages'
  `val_correct` metrics (the report pairs the two to test what distillation bought).
- `SweepTrial`: one trial of the distill sweep: trial.json in the trial's own folder, and the distill stage's
  `sweep` metrics.
- `SensitivityRecord`: the qat stage's per-layer int8 sensitivity, in its `sensitivity` metrics.
- `PruneStep`: one step of the prune stage (size, measured latency, top-1 after recovery), in its `steps` metrics.
- `ScoutEntry`, `ScoutTable`: the scout's timing of each candidate student on one device (scout/tables/<device>.json,
  the entries of scout/cache.json); `ScoutChoice`: what the scout stage chose and why, in its `scout` metrics.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.config import SEARCHABLE, search_type
from edgekd.errors import EdgekdError
from edgekd.ondevice.files import write_json_atomic
from edgekd.ondevice.records import Latency, RecordError, _check, _int, _num, _str


def _settings(doc: Any, where: str) -> dict[str, float]:
    _check(doc, (dict,), where)
    unknown = sorted(k for k in doc if not isinstance(k, str) or search_type(k) is None)
    if unknown:
        raise RecordError(
            f"{where}.{unknown[0]}: not a swept setting ({', '.join(SEARCHABLE)}, features.<i>.weight, "
            "or a schedule's parameter)"
        )
    return {k: search_type(k)(_check(v, (int, float), f"{where}.{k}")) for k, v in doc.items()}


@dataclass(frozen=True)
class DistillChoice:
    """The distill settings the run chose: the sweep's winner as overrides of the distill section ({}: none)."""

    overrides: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, doc: Any, where: str = "settings") -> DistillChoice:
        _check(doc, (dict,), where)
        return cls(_settings(doc.get("overrides", {}), f"{where}.overrides"))

    def to_dict(self) -> dict[str, Any]:
        return {"overrides": dict(self.overrides)}

    def write(self, path: Path) -> None:
        write_json_atomic(path, self.to_dict())

    @classmethod
    def read(cls, path: Path) -> DistillChoice:
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecordError) as e:
            raise EdgekdError(f"{path}: not a distill settings file: {e}") from None

    @property
    def name(self) -> str:
        """A trial's short name: T4_soft0.9_hard0.1, features.0.weight=0.5 for a path into a setting."""
        short = {"temperature": "T", "soft_weight": "soft", "hard_weight": "hard"}
        return "_".join(f"{short.get(k, k)}{'=' if '.' in k else ''}{v:g}" for k, v in self.overrides.items())


@dataclass(frozen=True)
class ValOutcome:
    """Which of the `images` validation images (in the split's order) a model classified right: a bitmask
    (numpy.packbits, base64) that stays small for large splits (50,000 images: 8.4 kB)."""

    images: int
    correct: str

    @classmethod
    def of(cls, right: np.ndarray) -> ValOutcome:
        right = np.asarray(right, dtype=bool).ravel()
        return cls(len(right), base64.b64encode(np.packbits(right).tobytes()).decode("ascii"))

    def right(self) -> np.ndarray:
        """One boolean per validation image."""
        return np.unpackbits(np.frombuffer(base64.b64decode(self.correct), dtype=np.uint8))[: self.images].astype(bool)

    @classmethod
    def from_dict(cls, doc: Any, where: str = "val_correct") -> ValOutcome:
        _check(doc, (dict,), where)
        images, correct = _int(doc, "images", where), _str(doc, "correct", where)
        if images < 0:
            raise RecordError(f"{where}.images: expected a count of images, got {images}")
        try:
            size = len(base64.b64decode(correct, validate=True))
        except binascii.Error:
            raise RecordError(f"{where}.correct: not base64") from None
        if size != math.ceil(images / 8):
            raise RecordError(f"{where}.correct: {size} bytes hold no bitmask of {images} images")
        return cls(images, correct)

    def to_dict(self) -> dict[str, Any]:
        return {"images": self.images, "correct": self.correct}


TRIAL_STATES = ("complete", "pruned", "failed")


@dataclass(frozen=True)
class SweepTrial:
    """One trial of the distill sweep: the settings it trained with, its seed, and its scores. `selection_top1` and
    `selection_kl` (to the teacher) are on the selection split carved from the training data, the figures the
    winner is chosen by; `val_top1` is the validation split's, recorded for the record and never used to choose."""

    number: int
    settings: dict[str, float]
    seed: int
    state: str
    selection_top1: float | None = None
    selection_kl: float | None = None
    val_top1: float | None = None
    epochs: int = 0
    retry_of: int | None = None

    @classmethod
    def from_dict(cls, doc: Any, where: str = "sweep[]") -> SweepTrial:
        _check(doc, (dict,), where)
        state = _check(doc.get("state"), (str,), f"{where}.state")
        if state not in TRIAL_STATES:
            raise RecordError(f"{where}.state: {state!r} is not one of {', '.join(TRIAL_STATES)}")
        retry = doc.get("retry_of")
        return cls(
            number=_check(doc.get("number"), (int,), f"{where}.number"),
            settings=_settings(doc.get("settings"), f"{where}.settings"),
            seed=_check(doc.get("seed"), (int,), f"{where}.seed"),
            state=state,
            selection_top1=_num(doc, "selection_top1", where, optional=True),
            selection_kl=_num(doc, "selection_kl", where, optional=True),
            val_top1=_num(doc, "val_top1", where, optional=True),
            epochs=_check(doc.get("epochs", 0), (int,), f"{where}.epochs"),
            retry_of=None if retry is None else _check(retry, (int,), f"{where}.retry_of"),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, path: Path) -> None:
        write_json_atomic(path, self.to_dict())

    @classmethod
    def read(cls, path: Path) -> SweepTrial:
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")), "trial")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecordError) as e:
            raise EdgekdError(f"{path}: not a sweep trial record: {e}") from None


@dataclass(frozen=True)
class LayerScore:
    """One quantized layer: int8 top-1 and KL to fp32 with this layer alone float, and the gain over all-int8."""

    layer: str
    top1: float
    kl: float
    top1_gain: float

    @classmethod
    def from_dict(cls, doc: Any, where: str) -> LayerScore:
        _check(doc, (dict,), where)
        return cls(
            _check(doc.get("layer"), (str,), f"{where}.layer"),
            _num(doc, "top1", where) or 0.0,
            _num(doc, "kl", where) or 0.0,
            _num(doc, "top1_gain", where) or 0.0,
        )


@dataclass(frozen=True)
class KeptFloat:
    """What `qat.auto_keep_float` chose: the layers kept float, the int8 drop then, the budget, and whether met."""

    kept: list[str]
    drop: float
    budget: float
    met: bool

    @classmethod
    def from_dict(cls, doc: Any, where: str) -> KeptFloat:
        _check(doc, (dict,), where)
        kept = _check(doc.get("kept"), (list,), f"{where}.kept")
        return cls(
            [_check(k, (str,), f"{where}.kept[]") for k in kept],
            _num(doc, "drop", where) or 0.0,
            _num(doc, "budget", where) or 0.0,
            _check(doc.get("met"), (bool,), f"{where}.met"),
        )


@dataclass(frozen=True)
class SensitivityRecord:
    """Per-layer int8 sensitivity on training images: layers most sensitive first."""

    images: int
    calibration: str
    fp32_top1: float
    int8_top1: float
    layers: list[LayerScore]
    auto_keep_float: KeptFloat | None = None
    split: str = "train"
    measure: str = "top-1 and KL to fp32 with only this layer float, every other layer int8"

    @classmethod
    def from_dict(cls, doc: Any, where: str = "sensitivity") -> SensitivityRecord:
        _check(doc, (dict,), where)
        layers = _check(doc.get("layers"), (list,), f"{where}.layers")
        auto = doc.get("auto_keep_float")
        return cls(
            images=_check(doc.get("images"), (int,), f"{where}.images"),
            calibration=_check(doc.get("calibration"), (str,), f"{where}.calibration"),
            fp32_top1=_num(doc, "fp32_top1", where) or 0.0,
            int8_top1=_num(doc, "int8_top1", where) or 0.0,
            layers=[LayerScore.from_dict(x, f"{where}.layers[{i}]") for i, x in enumerate(layers)],
            auto_keep_float=None if auto is None else KeptFloat.from_dict(auto, f"{where}.auto_keep_float"),
            split=_check(doc.get("split", "train"), (str,), f"{where}.split"),
            measure=_check(doc.get("measure", cls.measure), (str,), f"{where}.measure"),
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.auto_keep_float is None:
            del out["auto_keep_float"]
        return out


@dataclass(frozen=True)
class PruneStep:
    """One pruning step: the channel share Torch-Pruning removed, the size after it (and as shares of the
    teacher's), the batch-1 latency of its candidate, and the val top-1 after the step's recovery (None with
    recover_epochs 0). Step 0 is the unpruned teacher. The latency is of `device` (`local`: this machine), of
    catalogue row `artifact` at `precision` (a device's fastest engine, else its ONNX Runtime file), and `runtime`
    is what ran it as it reported itself (`onnxruntime 1.20.1`, `tensorrt 8.5.2.2`, or `tensorrt-standin ...` in
    tests: the stand-in's figure, never TensorRT's). Records written before devices were timed have no device.
    `teacher_ms` is the unpruned teacher's p50 timed in the same interleaved rounds as this step's candidate (a
    machine's speed drifts between steps; the ratio of the two does not): None at step 0 and in older records.
    `unstable` says why the candidate's figure cannot be trusted (its rounds disagreed, or the machine was busy).
    With a latency target, `judged_ms` is the figure the target was judged on: `of_teacher` times the teacher's
    figure at step 0, so that every step is judged at one machine speed (step 0's)."""

    step: int
    channel_share: float
    macs: int
    params: int
    macs_share: float
    params_share: float
    latency_ms: float | None = None
    latency_spread: float | None = None
    val_top1: float | None = None
    met_target: bool = False
    device: str | None = None
    artifact: str | None = None
    precision: str | None = None
    runtime: str | None = None
    teacher_ms: float | None = None
    unstable: str | None = None
    judged_ms: float | None = None

    @property
    def of_teacher(self) -> float | None:
        """The candidate's latency as a share of the teacher's timed in the same rounds (1 at step 0)."""
        if self.step == 0:
            return 1.0
        if self.latency_ms is None or not self.teacher_ms:
            return None
        return self.latency_ms / self.teacher_ms

    @property
    def timed_on(self) -> str | None:
        """Where and as what the latency was taken, for the report: `orin: tensorrt-standin 8.5.2-standin fp16`."""
        if self.device is None:
            return None
        return f"{self.device}: {' '.join(p for p in (self.runtime, self.precision) if p)}"

    @classmethod
    def from_dict(cls, doc: Any, where: str = "steps[]") -> PruneStep:
        _check(doc, (dict,), where)
        return cls(
            step=_int(doc, "step", where),
            channel_share=_num(doc, "channel_share", where),
            macs=_int(doc, "macs", where),
            params=_int(doc, "params", where),
            macs_share=_num(doc, "macs_share", where),
            params_share=_num(doc, "params_share", where),
            latency_ms=_num(doc, "latency_ms", where, optional=True),
            latency_spread=_num(doc, "latency_spread", where, optional=True),
            val_top1=_num(doc, "val_top1", where, optional=True),
            met_target=_check(doc.get("met_target", False), (bool,), f"{where}.met_target"),
            device=_str(doc, "device", where, optional=True),
            artifact=_str(doc, "artifact", where, optional=True),
            precision=_str(doc, "precision", where, optional=True),
            runtime=_str(doc, "runtime", where, optional=True),
            teacher_ms=_num(doc, "teacher_ms", where, optional=True),
            unstable=_str(doc, "unstable", where, optional=True),
            judged_ms=_num(doc, "judged_ms", where, optional=True),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def prune_steps(metrics: Any, where: str = "prune.steps") -> list[PruneStep]:
    """The prune stage's steps from its manifest metrics ([] when it recorded none)."""
    if not isinstance(metrics, dict) or metrics.get("steps") is None:
        return []
    steps = _check(metrics["steps"], (list,), where)
    return [PruneStep.from_dict(s, f"{where}[{i}]") for i, s in enumerate(steps)]


def prune_target_ms(metrics: Any, where: str = "prune.target") -> float | None:
    """The prune stage's latency target (student.prune.target.latency_ms), None for a size target."""
    target = metrics.get("target") if isinstance(metrics, dict) else None
    return _num(_check(target, (dict,), where), "latency_ms", where, optional=True) if target is not None else None


def not_faster(steps: list[PruneStep]) -> list[tuple[PruneStep, PruneStep]]:
    """(step before, step) pairs where the MACs fell but the measured latency did not: judged on the latency as a
    share of the teacher's timed in the same rounds where both steps have it (the machine's drift between the
    steps cancels), else on the two figures as they were taken."""
    return [(prev, s) for prev, s in zip(steps, steps[1:]) if s.macs < prev.macs and _not_lower(prev, s)]


def _not_lower(prev: PruneStep, s: PruneStep) -> bool:
    if prev.of_teacher is not None and s.of_teacher is not None:
        return s.of_teacher >= prev.of_teacher
    return s.latency_ms is not None and prev.latency_ms is not None and s.latency_ms >= prev.latency_ms


SCOUT_SCHEMA = "edgekd.scout/1"
SCOUT_STATUSES = ("done", "failed", "skipped")


@dataclass
class ScoutEntry:
    """One candidate student on one device: its size and its latency at the budget's batch (the benchmark's
    `Latency` record), whether that p50 is within the device's budget (None: no budget there), whether the figure
    came from the cache; or, failed or skipped, why it was not timed. On a device, `artifact` is the row the
    latency is of (the best engine where engines ran, else the ONNX Runtime file: what the report judges) and
    `runtime` what ran it as the device reported it (e.g. `tensorrt 8.5.2.2`, or `tensorrt-standin ...` in tests)."""

    candidate: str
    status: str
    reason: str | None = None
    params: int | None = None
    macs: int | None = None
    latency: Latency | None = None
    within_budget: bool | None = None
    cached: bool = False
    artifact: str | None = None
    runtime: str | None = None

    @property
    def p50_ms(self) -> float | None:
        return self.latency.p50_ms if self.latency is not None else None

    @classmethod
    def from_dict(cls, doc: Any, where: str = "entry") -> ScoutEntry:
        _check(doc, (dict,), where)
        status = _str(doc, "status", where)
        if status not in SCOUT_STATUSES:
            raise RecordError(f"{where}.status: {status!r} is not one of {', '.join(SCOUT_STATUSES)}")
        latency = doc.get("latency")
        if status == "done" and latency is None:
            raise RecordError(f"{where}.latency: a timed candidate needs its latency")
        return cls(
            candidate=_str(doc, "candidate", where),
            status=status,
            reason=_str(doc, "reason", where, optional=True),
            params=_int(doc, "params", where, optional=True),
            macs=_int(doc, "macs", where, optional=True),
            latency=None if latency is None else Latency.from_dict(latency, f"{where}.latency"),
            within_budget=_check(doc.get("within_budget"), (bool,), f"{where}.within_budget", optional=True),
            cached=_check(doc.get("cached", False), (bool,), f"{where}.cached"),
            artifact=_str(doc, "artifact", where, optional=True),
            runtime=_str(doc, "runtime", where, optional=True),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


LOCAL = "local"
"""The name of this machine wherever a device name goes (bench/local.json, a ScoutTable's or a prune step's
`device`: `local` or a devices.yaml name)."""


@dataclass
class ScoutTable:
    """The scout's table of one device: every candidate, timed at `batch_size` on `runtime` at `precision` in
    interleaved rounds (`settings`), against the device's latency budget (`budget_ms`, None: none set) less the
    `headroom` share kept free for the device's run-to-run drift: a candidate fits within `limit_ms`."""

    device: str
    runtime: str
    precision: str
    batch_size: int
    budget_ms: float | None
    created: str
    settings: dict[str, Any] = field(default_factory=dict)
    entries: list[ScoutEntry] = field(default_factory=list)
    headroom: float = 0.0
    schema: str = SCOUT_SCHEMA

    @property
    def limit_ms(self) -> float | None:
        """The p50 a candidate must stay within: the budget less the headroom."""
        return None if self.budget_ms is None else self.budget_ms * (1 - self.headroom)

    def mark(self, entry: ScoutEntry) -> str | None:
        """`within` the limit, `tight` (within the budget, not its headroom), `over`; None without a budget."""
        if entry.within_budget is None or entry.p50_ms is None or self.budget_ms is None:
            return None
        return "within" if entry.within_budget else "tight" if entry.p50_ms <= self.budget_ms else "over"

    def timed(self) -> list[ScoutEntry]:
        """The candidates with a latency, fastest first."""
        return sorted((e for e in self.entries if e.status == "done"), key=lambda e: e.p50_ms or 0.0)

    def fitting(self) -> list[ScoutEntry]:
        """The candidates within the limit, the most MACs first (ties: the faster first)."""
        within = [e for e in self.timed() if e.within_budget]
        return sorted(within, key=lambda e: (-(e.macs or 0), e.p50_ms or 0.0))

    def entry(self, candidate: str) -> ScoutEntry | None:
        return next((e for e in self.entries if e.candidate == candidate), None)

    def pareto(self) -> list[str]:
        """The timed candidates no other one beats on both counts (as fast or faster, as many MACs or more)."""
        timed = self.timed()
        return [
            e.candidate
            for e in timed
            if not any(
                o.p50_ms <= e.p50_ms and (o.macs or 0) >= (e.macs or 0) and (o.p50_ms, o.macs) != (e.p50_ms, e.macs)
                for o in timed
            )
        ]

    @classmethod
    def from_dict(cls, doc: Any, where: str = "scout") -> ScoutTable:
        _check(doc, (dict,), where)
        if doc.get("schema") != SCOUT_SCHEMA:
            raise RecordError(f"{where}.schema: {doc.get('schema')!r}, expected {SCOUT_SCHEMA!r}")
        entries = _check(doc.get("entries"), (list,), f"{where}.entries")
        return cls(
            device=_str(doc, "device", where),
            runtime=_str(doc, "runtime", where),
            precision=_str(doc, "precision", where),
            batch_size=_int(doc, "batch_size", where),
            budget_ms=_num(doc, "budget_ms", where, optional=True),
            created=_str(doc, "created", where),
            settings=_check(doc.get("settings", {}), (dict,), f"{where}.settings"),
            entries=[ScoutEntry.from_dict(e, f"{where}.entries[{i}]") for i, e in enumerate(entries)],
            headroom=_num(doc, "headroom", where, optional=True) or 0.0,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ScoutTrial:
    """One of the top k candidates distilled briefly: its top-1 on the selection split carved from the training
    data (never the validation split), after `epochs` epochs."""

    candidate: str
    selection_top1: float
    epochs: int

    @classmethod
    def from_dict(cls, doc: Any, where: str = "trials[]") -> ScoutTrial:
        _check(doc, (dict,), where)
        return cls(_str(doc, "candidate", where), _num(doc, "selection_top1", where), _int(doc, "epochs", where))


@dataclass
class ScoutChoice:
    """What the scout stage chose for `student.model: auto`, and why: the candidate, the device and budget it was
    chosen against, the sentence that says why it won, the brief distillation of the top k (when asked for), and
    the table of every scouted device (the first is the one chosen on)."""

    chosen: str
    device: str
    budget_ms: float
    why: str
    tables: list[ScoutTable]
    trials: list[ScoutTrial] = field(default_factory=list)

    @property
    def table(self) -> ScoutTable:
        """The table of the device the choice was made on."""
        return next(t for t in self.tables if t.device == self.device)

    @classmethod
    def from_dict(cls, doc: Any, where: str = "scout") -> ScoutChoice:
        _check(doc, (dict,), where)
        tables = _check(doc.get("tables"), (list,), f"{where}.tables")
        trials = _check(doc.get("trials", []), (list,), f"{where}.trials")
        choice = cls(
            chosen=_str(doc, "chosen", where),
            device=_str(doc, "device", where),
            budget_ms=_num(doc, "budget_ms", where),
            why=_str(doc, "why", where),
            tables=[ScoutTable.from_dict(t, f"{where}.tables[{i}]") for i, t in enumerate(tables)],
            trials=[ScoutTrial.from_dict(t, f"{where}.trials[{i}]") for i, t in enumerate(trials)],
        )
        if not any(t.device == choice.device for t in choice.tables):
            raise RecordError(f"{where}.tables: no table of {choice.device!r}, the device the choice was made on")
        if choice.table.entry(choice.chosen) is None:
            raise RecordError(f"{where}.chosen: {choice.chosen!r} is not in the table of {choice.device!r}")
        return choice

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def scout_choice(metrics: Any, where: str = "scout") -> ScoutChoice | None:
    """The scout stage's choice from its manifest metrics (None when it recorded none)."""
    if not isinstance(metrics, dict) or metrics.get("scout") is None:
        return None
    return ScoutChoice.from_dict(metrics["scout"], where)
