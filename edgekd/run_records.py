"""Typed records that one stage writes and another part of edgekd reads: the producer and every reader use
the same class, and `from_dict` is the one validating reader (a RecordError names the bad field).

- `DistillChoice`: distill/settings.json, the distill settings the sweep chose (qat's KD reads it).
- `SweepTrial`: one trial of the distill sweep: trial.json in the trial's own folder, and the distill stage's
  `sweep` metrics.
- `SensitivityRecord`: the qat stage's per-layer int8 sensitivity, in its `sensitivity` metrics.
- `PruneStep`: one step of the prune stage (size, measured latency, top-1 after recovery), in its `steps` metrics.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgekd.config import SEARCHABLE
from edgekd.errors import EdgekdError
from edgekd.ondevice.files import write_json_atomic
from edgekd.ondevice.records import RecordError, _check, _int, _num

SWEPT = tuple(SEARCHABLE)
"""The distill settings a sweep may vary, in the order trials are named."""


def _settings(doc: Any, where: str) -> dict[str, float]:
    _check(doc, (dict,), where)
    unknown = sorted(set(doc) - set(SWEPT))
    if unknown:
        raise RecordError(f"{where}.{unknown[0]}: not a swept setting ({', '.join(SWEPT)})")
    return {k: SEARCHABLE[k](_check(doc[k], (int, float), f"{where}.{k}")) for k in SWEPT if k in doc}


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
        """A trial's short name: T4_soft0.9_hard0.1."""
        short = {"temperature": "T", "soft_weight": "soft", "hard_weight": "hard"}
        return "_".join(f"{short.get(k, k)}{v:g}" for k, v in self.overrides.items())


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
    teacher's), the batch-1 ONNX latency measured when the target is a latency (None otherwise), and the val
    top-1 after the step's recovery (None with recover_epochs 0). Step 0 is the unpruned teacher."""

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
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def prune_steps(metrics: Any, where: str = "prune.steps") -> list[PruneStep]:
    """The prune stage's steps from its manifest metrics ([] when it recorded none)."""
    if not isinstance(metrics, dict) or metrics.get("steps") is None:
        return []
    steps = _check(metrics["steps"], (list,), where)
    return [PruneStep.from_dict(s, f"{where}[{i}]") for i, s in enumerate(steps)]


def not_faster(steps: list[PruneStep]) -> list[tuple[PruneStep, PruneStep]]:
    """(step before, step) pairs where the MACs fell but the measured latency did not."""
    return [
        (prev, s)
        for prev, s in zip(steps, steps[1:])
        if s.macs < prev.macs
        and s.latency_ms is not None
        and prev.latency_ms is not None
        and s.latency_ms >= prev.latency_ms
    ]
