"""Typed models of pipeline.yaml's sections: the only place that knows the pipeline's YAML shape.

Every section is a pydantic model with ``extra="forbid"``, so a typo is an error that names the key,
its line in the file and the nearest valid key (the loader, :mod:`edgekd.config.loader`, formats it).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from edgekd.ondevice.catalog import ENGINE_PRECISIONS
from edgekd.ondevice.names import PLAIN_NAME


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are validated on assignment, numbers are
    finite (`.inf`, `.nan` refused) and a boolean is never taken for a number (`epochs: true` is not 1)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_boolean_numbers(cls, data: object) -> object:
        for name, value in data.items() if isinstance(data, dict) else ():
            field = cls.model_fields.get(name) if isinstance(name, str) else None
            if isinstance(value, bool) and field is not None and field.annotation in NUMBERS:
                raise ValueError(f"{name}: expected a number, got the boolean {str(value).lower()}")
        return data


NUMBERS = (int, float, int | None, float | None)
MAX_BATCH = 65_536
"""Larger batches than any GPU or CPU can hold: a value above it is a typo, caught before a run allocates it."""


PositiveFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]


# --------------------------------------------------------------------------- data


class DataConfig(Section):
    """Where the images come from and how they are shaped."""

    dataset: Literal["digits", "imagefolder", "cifar10", "cifar100", "mnist", "fashion_mnist"] = Field(
        "digits",
        description="Built-in `digits` (scikit-learn), a user's `imagefolder`, or a torchvision set read from `root`.",
    )
    root: Path | None = Field(
        None, description="Data folder (imagefolder: holds train/ and val/; torchvision sets: their root)."
    )
    download: bool = Field(
        False, description="Let torchvision download its set into `root` (off: edgekd never downloads by itself)."
    )
    image_size: int = Field(32, ge=8, le=1024, description="Side of the square input images, in pixels.")
    channels: Literal[1, 3] | None = Field(
        None, description="Force 1 (grayscale) or 3 (RGB) channels; default: the data set's own."
    )
    mean: list[float] | None = Field(
        None, description="Per-channel normalisation mean; default: the data set's usual values."
    )
    std: list[PositiveFloat] | None = Field(
        None, description="Per-channel normalisation std; default: the data set's usual values."
    )
    val_fraction: float = Field(
        0.2, gt=0, lt=1, description="digits only: share of samples held out for validation (fixed seeded split)."
    )
    batch_size: int = Field(64, ge=1, le=MAX_BATCH, description="Training batch size.")
    eval_batch_size: int = Field(256, ge=1, le=MAX_BATCH, description="Batch size for validation passes.")
    num_workers: int | None = Field(
        None,
        ge=0,
        le=256,
        description="DataLoader worker processes for file-backed data sets; default: the cores, at most 8.",
    )
    limit_train: int | None = Field(None, ge=1, description="Use only the first N training samples (quick trials).")
    limit_val: int | None = Field(None, ge=1, description="Use only the first N validation samples (quick trials).")
    on_bad_image: Literal["error", "skip"] = Field(
        "error",
        description="imagefolder: an unreadable, truncated or non-image file stops the run before the first stage "
        "(`error`), or is left out and listed in the manifest (`skip`).",
    )
    content_hash: bool = Field(
        False, description="imagefolder: fingerprint the files by content (sha256) instead of size and mtime."
    )

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.dataset != "digits" and self.root is None:
            raise ValueError(f"data.root is required for dataset '{self.dataset}' (a local folder)")
        for name in ("mean", "std"):
            vals = getattr(self, name)
            if vals is not None and len(vals) not in (1, 3):
                raise ValueError(f"data.{name} needs 1 or 3 values, got {len(vals)}")
        return self


# --------------------------------------------------------------------------- training


class OptimConfig(Section):
    """Optimizer and learning-rate schedule of a training stage."""

    epochs: int = Field(10, ge=0, description="Training epochs.")
    optimizer: Literal["sgd", "adamw"] = Field("sgd", description="`sgd` (Nesterov momentum) or `adamw`.")
    lr: PositiveFloat = Field(0.05, description="Peak learning rate.")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum.")
    weight_decay: NonNegFloat = Field(5e-4, description="Weight decay.")
    scheduler: Literal["cosine", "step", "constant"] = Field(
        "cosine", description="Learning-rate schedule over the epochs."
    )
    step_size: int = Field(30, ge=1, description="`step` scheduler: epochs between decays.")
    gamma: float = Field(0.1, gt=0, le=1, description="`step` scheduler: decay factor.")
    warmup_epochs: int = Field(0, ge=0, description="Linear warm-up epochs before the schedule.")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Label smoothing of the hard-label cross-entropy.")
    channels_last: bool = Field(
        True,
        description="Train and evaluate in NHWC memory format (faster convolutions on CPU and CUDA); the saved model "
        "and every export are NCHW either way.",
    )


class ModelInputs(Section):
    """What a model expects as input, when it differs from the data section's (mean/std/size)."""

    image_size: int | None = Field(
        None, ge=8, le=1024, description="Input side in pixels; default: the weights' own, else `data.image_size`."
    )
    mean: list[float] | None = Field(
        None, description="Per-channel normalisation mean; default: the weights' own, else `data.mean`."
    )
    std: list[PositiveFloat] | None = Field(
        None, description="Per-channel normalisation std; default: the weights' own, else `data.std`."
    )

    @model_validator(mode="after")
    def _check_inputs(self) -> ModelInputs:
        for name in ("mean", "std"):
            vals = getattr(self, name)
            if vals is not None and len(vals) not in (1, 3):
                raise ValueError(f"{name} needs 1 or 3 values, got {len(vals)}")
        return self


_WEIGHTS_HELP = (
    "Pretrained weights: a torchvision enum name (`DEFAULT`, `IMAGENET1K_V2`), `pretrained` for a `timm/...` model, "
    "or a local file (state_dict .pt/.pth, .safetensors). Never downloaded unless `download: true` or --allow-download."
)


class TeacherConfig(OptimConfig, ModelInputs):
    """The big model: loaded from a checkpoint, or trained (from scratch or from `weights`) by the `teacher` stage.

    The optimiser fields (epochs, lr, ...) say how it is trained when no `checkpoint` is given.
    """

    model: str = Field(..., description="Model name from the registry (`edgekd models` lists them), or `timm/<name>`.")
    checkpoint: Path | None = Field(
        None, description="A state_dict file (.pt/.pth) to load instead of training; loaded with weights_only=True."
    )
    weights: str | None = Field(None, description=_WEIGHTS_HELP + " The teacher is then fine-tuned.")
    download: bool = Field(
        False, description="Let torchvision/timm download missing `weights` into their cache (or --allow-download)."
    )
    freeze_backbone_epochs: int = Field(
        0, ge=0, description="Fine-tuning: train only the new classifier head for the first N epochs."
    )
    backbone_lr_factor: float = Field(
        1.0, gt=0, le=1, description="Fine-tuning: learning rate of the backbone relative to the head's."
    )
    allow_weak: bool = Field(
        False, description="Go on when the teacher's val top-1 is under 2x chance (else the run stops)."
    )

    @model_validator(mode="after")
    def _one_source(self) -> TeacherConfig:
        if self.weights and self.checkpoint:
            raise ValueError("give either teacher.checkpoint (used as is) or teacher.weights (fine-tuned), not both")
        return self


class TimingConfig(Section):
    """How every artifact is timed, here (`benchmark:`) and on a device (devices.yaml `benchmark:`)."""

    batch_sizes: list[Annotated[int, Field(ge=1, le=4096)]] = Field(
        default_factory=lambda: [1, 8], description="Batch sizes to time."
    )
    warmup: int = Field(10, ge=0, description="Untimed warm-up runs per batch size.")
    min_runs: int = Field(30, ge=1, description="Minimum timed runs per round.")
    min_seconds: NonNegFloat = Field(
        1.0, description="Minimum timed seconds per batch size and artifact, split over the rounds."
    )
    repeats: int = Field(
        3,
        ge=1,
        description="Interleaved rounds (each visits every artifact once, shuffled); their spread marks unstable figures.",
    )
    threads: int | None = Field(
        None, ge=1, description="CPU threads for the runtimes; default: OMP_NUM_THREADS where set, else all cores."
    )


class PruneTarget(Section):
    """How small the pruned student must be: exactly one of `macs`, `params` (shares of the teacher's) or
    `latency_ms` (measured on `device` the way the benchmark measures)."""

    macs: float | None = Field(None, gt=0, lt=1, description="Share of the teacher's MACs to keep at most (0.5: half).")
    params: float | None = Field(None, gt=0, lt=1, description="Share of the teacher's parameters to keep at most.")
    latency_ms: PositiveFloat | None = Field(
        None,
        description="Batch-1 p50 latency to reach on `device`; each step's candidate is exported and timed there, "
        "and pruning stops at the first step that meets it.",
    )
    device: str = Field(
        "local",
        pattern=f"^{PLAIN_NAME}$",
        description="Where every step's candidate is timed: `local` (this machine, ONNX Runtime fp32) or a device "
        "of `devices_file`, where the candidate is shipped and timed as `edgekd bench FILE.onnx --device` times "
        "it (its fastest engine, else ONNX Runtime fp32, with its devices.yaml `benchmark` settings).",
    )
    devices_file: Path = Field(
        Path("devices.yaml"),
        description="The devices.yaml that defines `device` (read only when it is not `local`; the key covers the "
        "device's entry and the runtime versions it reports, not the rest of the file).",
        json_schema_extra={"key": False},
    )

    @model_validator(mode="after")
    def _one(self) -> PruneTarget:
        given = [k for k in ("macs", "params", "latency_ms") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of macs, params, latency_ms; got {', '.join(given) or 'none'}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("macs", "params", "latency_ms") if getattr(self, k) is not None)

    def text(self) -> str:
        """The target in words: `0.5 of its MACs`, `0.4 ms at batch 1 on local`."""
        if self.latency_ms is not None:
            return f"{self.latency_ms:g} ms at batch 1 on {self.device}"
        return f"{getattr(self, self.kind):g} of its {'MACs' if self.kind == 'macs' else 'parameters'}"


class PruneConfig(Section):
    """The student is the teacher with whole channels removed (Torch-Pruning), step by step, each step
    recovered by distillation from the unpruned teacher (the distill section's losses and optimiser,
    for `recover_epochs`); the distill stage then trains the result with its full budget."""

    target: PruneTarget = Field(..., description="How small the student must be.")
    steps: int = Field(
        2,
        ge=1,
        le=20,
        description="`macs`/`params`: the number of steps (each keeps the same share); `latency_ms`: the most steps.",
    )
    max_step: float = Field(
        1 / 3, gt=0, le=1 / 3, description="Largest share of the MACs (or params) one step may remove."
    )
    importance: Literal["magnitude", "taylor", "bn_scale"] = Field(
        "magnitude",
        description="Channel importance: group L2 magnitude, first-order Taylor (gradients of one training batch) "
        "or BatchNorm scale.",
    )
    round_to: int = Field(
        8, ge=1, le=256, description="Every pruned layer keeps a multiple of this many channels (8: Tensor Cores)."
    )
    global_pruning: bool = Field(
        False, description="Rank channels across all layers (uneven widths) instead of the same share per layer."
    )
    ignored: list[str] = Field(
        default_factory=list, description="Module paths never pruned (the classifier head always is left out)."
    )
    layer_ratios: dict[str, Annotated[float, Field(gt=0, lt=1)]] = Field(
        default_factory=dict,
        description="Per-step channel share removed from these module paths, instead of the searched one.",
    )
    recover_epochs: int = Field(1, ge=0, description="Epochs of distillation after each step.")
    recover_lr: PositiveFloat | None = Field(
        None,
        description="Learning rate of each step's recovery (default: distill.lr). A tenth of it keeps each step's "
        "network working; lower distill.lr with it, or the distill stage's first epochs undo the recovery "
        "(docs/pruning.md).",
    )
    timing: TimingConfig = Field(
        default_factory=TimingConfig,
        description="How each step's candidate is timed on `local` (batch 1; `batch_sizes` is not used); a device "
        "is timed with its devices.yaml `benchmark` settings.",
    )

    @model_validator(mode="after")
    def _fits_steps(self) -> PruneConfig:
        share = self.target.macs if self.target.macs is not None else self.target.params
        if share is not None and share ** (1 / self.steps) < 1 - self.max_step - 1e-9:
            per_step = 1 - share ** (1 / self.steps)
            raise ValueError(
                f"steps: {self.steps} step(s) to {share:g} of the teacher remove {per_step:.0%} each, more than "
                f"max_step {self.max_step:.0%}; use steps >= {_steps_needed(share, self.max_step)}"
            )
        return self


def _steps_needed(share: float, max_step: float) -> int:
    return max(1, math.ceil(math.log(share) / math.log(1 - max_step) - 1e-9))


PRUNE_CANDIDATE = "prune/"
"""How a scout candidate names the teacher pruned to a share of its MACs: `prune/0.5`."""


class ScoutConfig(Section):
    """Candidate students timed on the target devices before any training (`edgekd scout`, and the scout
    stage that `student.model: auto` runs): each is built with the pipeline's input size, channels and
    classes, exported with random weights and timed with the benchmark's harness."""

    candidates: list[str] = Field(
        default_factory=list,
        description="Registry names, `timm/<name>` (timm installed) and `prune/<share>` (the teacher pruned to that "
        "share of its MACs; Torch-Pruning installed). Empty: the registry models smaller than the teacher, and the "
        "teacher pruned to 0.5 and 0.25.",
    )
    devices: list[Annotated[str, Field(pattern=f"^{PLAIN_NAME}$")]] = Field(
        default_factory=lambda: ["local"],
        min_length=1,
        description="Where candidates are timed: `local` (this machine) and devices.yaml names; `student.model: auto` "
        "picks by the latency budget of the first.",
    )
    devices_file: Path = Field(
        Path("devices.yaml"),
        description="The devices.yaml that defines the names in `devices` other than `local` (read only when there "
        "are such; `edgekd scout --devices` overrides it).",
    )
    headroom: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="Share of the latency budget kept free: a candidate fits when its p50 is within the budget less "
        "this share, room for the device's run-to-run drift between the scout and the benchmark (the trained "
        "student is judged against the whole budget); 0: the budget itself.",
    )
    top_k: int = Field(
        1, ge=1, le=16, description="`auto`: how many of the largest candidates within budget are distilled briefly."
    )
    train_epochs: int = Field(
        0, ge=0, description="`auto` with top_k > 1: epochs of the brief distillation that ranks the top k."
    )
    selection_split: float = Field(
        0.1,
        gt=0,
        lt=0.5,
        description="`auto` with top_k > 1: share of the training data held out to rank the top k (never the "
        "validation split the report scores on).",
    )

    @field_validator("candidates")
    @classmethod
    def _candidates(cls, names: list[str]) -> list[str]:
        for name in names:
            if name.startswith(PRUNE_CANDIDATE):
                share = name.removeprefix(PRUNE_CANDIDATE)
                try:
                    ok = 0 < float(share) < 1
                except ValueError:
                    ok = False
                if not ok:
                    raise ValueError(
                        f"{name}: `prune/<share>` needs a share of the teacher's MACs in (0, 1), e.g. prune/0.5"
                    )
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"{twice[0]} is listed twice")
        return names


class StudentConfig(Section):
    """The small model to distil into; its input (data section) is what the exported model expects.

    Exactly one of `model` (a model of the registry, or `auto`: chosen by the scout) and `prune` (the
    teacher, structurally pruned)."""

    model: str | None = Field(
        None,
        description="Model name from the registry, `timm/<name>`, or `auto`: the scout picks the candidate with the "
        "most MACs within benchmark.budget.latency_ms of scout.devices[0].",
    )
    prune: PruneConfig | None = Field(None, description="Make the student by pruning the teacher (the `prune` stage).")
    init_checkpoint: Path | None = Field(None, description="Optional state_dict to start the student from.")
    weights: str | None = Field(None, description=_WEIGHTS_HELP)
    download: bool = Field(
        False, description="Let torchvision/timm download missing `weights` into their cache (or --allow-download)."
    )

    @model_validator(mode="after")
    def _one_start(self) -> StudentConfig:
        if self.weights and self.init_checkpoint:
            raise ValueError("give either student.weights or student.init_checkpoint, not both")
        if (self.model is None) == (self.prune is None):
            raise ValueError("give exactly one of student.model and student.prune")
        if self.prune is not None and (self.weights or self.init_checkpoint):
            raise ValueError("student.prune starts from the teacher: drop student.weights/init_checkpoint")
        if self.model == "auto" and (self.weights or self.init_checkpoint):
            raise ValueError("student.model auto starts from random weights: drop student.weights/init_checkpoint")
        return self

    @property
    def auto(self) -> bool:
        """The scout chooses the student (`model: auto`)."""
        return self.model == "auto"


# --------------------------------------------------------------------------- schedules


class ConstantSchedule(Section):
    kind: Literal["constant"] = "constant"
    value: NonNegFloat


class LinearSchedule(Section):
    """Linear from `start` (first epoch) to `end` (last epoch)."""

    kind: Literal["linear"]
    start: NonNegFloat
    end: NonNegFloat


class CosineSchedule(Section):
    """Half-cosine from `start` (first epoch) to `end` (last epoch)."""

    kind: Literal["cosine"]
    start: NonNegFloat
    end: NonNegFloat


class Phase(Section):
    """One phase of a piecewise schedule: a share of the epochs, at `value` or ramping `start`→`end`."""

    fraction: float = Field(..., gt=0, le=1, description="Share of the total epochs this phase lasts.")
    value: NonNegFloat | None = None
    start: NonNegFloat | None = None
    end: NonNegFloat | None = None

    @model_validator(mode="after")
    def _check(self) -> Phase:
        if (self.value is None) == (self.start is None or self.end is None):
            raise ValueError("a phase needs either `value` or both `start` and `end`")
        return self


class PhasedSchedule(Section):
    kind: Literal["phases"]
    phases: list[Phase] = Field(..., min_length=1)

    @model_validator(mode="after")
    def _check(self) -> PhasedSchedule:
        total = sum(p.fraction for p in self.phases)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"phase fractions must add up to 1, got {total:g}")
        return self


class AdaptiveSchedule(Section):
    """Starts at `start`; raises the value by `step` when val accuracy stalls for `patience` evaluations."""

    kind: Literal["adaptive"]
    start: NonNegFloat = Field(..., description="Value for the first epoch.")
    step: PositiveFloat = Field(0.1, description="Rise applied after `patience` stalled evaluations.")
    cap: NonNegFloat = Field(1.0, description="The value never rises above this.")
    patience: int = Field(2, ge=1, description="Stalled evaluations in a row before a rise.")
    cooldown: int = Field(1, ge=0, description="Evaluations after a rise that are not counted.")
    min_delta: NonNegFloat = Field(
        0.001, description="Smallest rise of val top-1, as a fraction (0.001 = 0.1 points), that counts as improvement."
    )


Schedule = Annotated[
    ConstantSchedule | LinearSchedule | CosineSchedule | PhasedSchedule | AdaptiveSchedule,
    Field(discriminator="kind"),
]
ScheduleOrValue = NonNegFloat | Schedule


# --------------------------------------------------------------------------- distillation


class FeaturePair(Section):
    """One (teacher layer, student layer) pair for feature distillation, by module path."""

    teacher: str = Field(..., description="Teacher module path, e.g. `layer3`.")
    student: str = Field(..., description="Student module path, e.g. `layer2`.")
    loss: Literal["hint", "attention", "mmd"] = Field(
        "hint", description="`hint` (FitNets MSE), `attention` (attention transfer) or `mmd`."
    )
    weight: NonNegFloat = Field(1.0, description="Weight of this pair's loss.")


class AugmentConfig(Section):
    """Batch augmentation, applied once so teacher and student see the same images."""

    random_crop: bool = Field(False, description="Random crop after reflect padding of image_size/8.")
    hflip: bool = Field(False, description="Random horizontal flip (off for digits: it changes what a digit means).")
    randaugment: bool = Field(False, description="RandAugment (2 ops, magnitude 9).")
    random_erasing: NonNegFloat = Field(0.0, le=1, description="Probability of random erasing.")
    mixup_alpha: NonNegFloat = Field(0.0, description="MixUp Beta(alpha, alpha); 0 turns it off.")
    cutmix_alpha: NonNegFloat = Field(0.0, description="CutMix Beta(alpha, alpha); 0 turns it off.")

    @property
    def active(self) -> bool:
        return any(
            [
                self.random_crop,
                self.hflip,
                self.randaugment,
                self.random_erasing > 0,
                self.mixup_alpha > 0,
                self.cutmix_alpha > 0,
            ]
        )


BnReestimate = Literal["auto"] | bool
BN_REESTIMATE_HELP = (
    "Recompute the BatchNorm running statistics on training images after training, before evaluation, "
    "export and calibration: `true`, `false`, or `auto` (when a BatchNorm momentum is below 0.05, e.g. MNASNet's 3e-4, "
    "or the eval-mode top-1 on a training slice is more than 10 points under the train-mode one)."
)


class DistillConfig(OptimConfig):
    """Student training against the frozen teacher."""

    temperature: ScheduleOrValue = Field(
        4.0, description="Softmax temperature T (a number or a schedule); must be > 0."
    )
    soft_weight: ScheduleOrValue = Field(
        0.9, description="Weight of T² · KL(teacher ‖ student) (a number or a schedule)."
    )
    hard_weight: ScheduleOrValue = Field(
        0.1, description="Weight of the cross-entropy with the true labels (a number or a schedule)."
    )
    features: list[FeaturePair] = Field(default_factory=list, description="Feature-distillation pairs.")
    augment: AugmentConfig = Field(
        default_factory=AugmentConfig, description="Batch augmentation shared by teacher and student."
    )
    teacher_cache: bool = Field(
        True, description="Store the teacher's outputs once and reuse them when augmentation allows."
    )
    tensorboard: bool = Field(
        False, description="Write TensorBoard event files under distill/tb/.", json_schema_extra={"key": False}
    )
    amp: Literal["off", "bf16", "fp16"] = Field("off", description="Mixed precision on CUDA.")
    bn_reestimate: BnReestimate = Field("auto", description=BN_REESTIMATE_HELP)

    @field_validator("temperature")
    @classmethod
    def _positive_temperature(cls, v: Any) -> Any:
        if isinstance(v, (int, float)) and v <= 0:
            raise ValueError("temperature must be > 0")
        parts = v.phases if isinstance(v, PhasedSchedule) else [v]
        values = [getattr(p, k, None) for p in parts for k in ("value", "start", "end")]
        if any(x is not None and x <= 0 for x in values):
            raise ValueError(
                f"every value of a temperature schedule must be > 0, got {[x for x in values if x is not None]}"
            )
        return v


def _inheriting(source: str) -> dict[str, Any]:
    """OptimConfig's fields as optional ones whose default (None) means: the same field of `source`."""
    return {
        name: (
            (Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation) | None,
            Field(None, description=info.description, json_schema_extra={"inherits": f"{source}.{name}"}),
        )
        for name, info in OptimConfig.model_fields.items()
    }


BaselineConfig = create_model(
    "BaselineConfig",
    __base__=Section,
    __doc__="""The student trained on hard labels alone with the distillation budget, to measure what KD buys.

    Optimizer settings not set here are the `distill` section's (same budget), as is its augmentation.
    """,
    enabled=(bool, Field(False, description="Run the `baseline` stage.")),
    bn_reestimate=(BnReestimate, Field("auto", description=BN_REESTIMATE_HELP)),
    **_inheriting("distill"),
)


SEARCHABLE: dict[str, type] = {
    "temperature": float,
    "soft_weight": float,
    "hard_weight": float,
    "lr": float,
    "weight_decay": float,
    "momentum": float,
    "label_smoothing": float,
    "warmup_epochs": int,
}
"""The distill fields a sweep may search, with their type; `search_type` adds the paths into a field."""

SCHEDULED = ("temperature", "soft_weight", "hard_weight")
"""The distill fields that take a schedule, whose parameters a sweep may search (`temperature.end`)."""

SCHEDULE_PARAMS: dict[str, type] = {
    name: int if info.annotation is int else float
    for model in (ConstantSchedule, LinearSchedule, CosineSchedule, Phase, AdaptiveSchedule)
    for name, info in model.model_fields.items()
    if name not in ("kind", "fraction")  # the schedule's tag; a phase's fraction must keep the sum at 1
}
"""The searchable parameters of a schedule (or of one of its phases), with their type."""

_PATH = re.compile(
    r"features\.\d+\.weight|(?P<head>temperature|soft_weight|hard_weight)\.(?:phases\.\d+\.)?(?P<param>\w+)"
)


def search_type(path: str) -> type | None:
    """The type of the setting a `sweep.space` path names (None: it names none): a field of SEARCHABLE, a feature
    pair's weight (`features.<i>.weight`) or a schedule's parameter (`temperature.end`, `soft_weight.phases.<i>.value`).
    Whether a pipeline's distill section has that setting: `search_paths`."""
    if path in SEARCHABLE:
        return SEARCHABLE[path]
    found = _PATH.fullmatch(path)
    if found is None:
        return None
    return SCHEDULE_PARAMS.get(found["param"]) if found["head"] else float


def search_paths(distill: DistillConfig) -> list[str]:
    """The paths `sweep.space` may name in this distill section: SEARCHABLE's fields, each feature pair's weight,
    and each parameter of the schedules it gives (a plain number has none)."""
    paths = [*SEARCHABLE, *(f"features.{i}.weight" for i in range(len(distill.features)))]
    for name in SCHEDULED:
        value = getattr(distill, name)
        parts = (
            [(f"{name}.phases.{i}", p) for i, p in enumerate(value.phases)]
            if isinstance(value, PhasedSchedule)
            else [(name, value)]
        )
        paths += [
            f"{at}.{param}"
            for at, part in parts
            if isinstance(part, Section)
            for param in SCHEDULE_PARAMS
            if getattr(part, param, None) is not None
        ]
    return paths


def with_settings(distill: DistillConfig, settings: dict[str, float]) -> DistillConfig:
    """A validated copy of `distill` with each path of `settings` (one of `search_paths`) set to its value."""
    data = distill.model_dump()
    for path, value in settings.items():
        *parents, last = path.split(".")
        node = data
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[last] = value
    return DistillConfig.model_validate(data)


class SearchRange(Section):
    """A continuous (or integer) range of one distill setting, sampled by `tpe` or `random`."""

    low: float = Field(..., description="Smallest value.")
    high: float = Field(..., description="Largest value.")
    log: bool = Field(False, description="Sample on a log scale (learning rates); needs low > 0.")

    @model_validator(mode="after")
    def _check(self) -> SearchRange:
        if self.high <= self.low:
            raise ValueError(f"high ({self.high:g}) must be above low ({self.low:g})")
        if self.log and self.low <= 0:
            raise ValueError(f"log: true needs low > 0, got {self.low:g}")
        return self


SearchValues = Annotated[list[NonNegFloat], Field(min_length=1)] | SearchRange


class SweepConfig(Section):
    """An Optuna study over distillation settings. Each trial trains a student on the training data less a seeded
    selection split and is scored on that split; the best goes on to the later stages, and the validation split
    scores only the winner. `temperature: [2, 8]`-style lists are the grid of earlier versions."""

    sampler: Literal["grid", "tpe", "random"] = Field(
        "grid", description="`grid` (every combination of the listed values), `tpe` or `random` (Optuna's samplers)."
    )
    trials: int | None = Field(
        None, ge=1, le=10_000, description="Finished trials the study needs; default: the grid's size (grid), else 10."
    )
    space: dict[str, SearchValues] = Field(
        default_factory=dict,
        description=f"Distill settings to search, each a list of values or a range `{{low, high, log}}`: "
        f"{', '.join(SEARCHABLE)}; a feature pair's weight, `features.<i>.weight` (i from 0); a parameter of a "
        "schedule given for temperature, soft_weight or hard_weight, e.g. `temperature.end`, `soft_weight.start`, "
        f"`hard_weight.phases.<i>.value` ({', '.join(SCHEDULE_PARAMS)}; not a phase's fraction). A path must "
        "exist in the distill section: `features.1.weight` needs two pairs, `temperature.end` a schedule with an end.",
    )
    temperature: list[PositiveFloat] = Field(default_factory=list, description="Shorthand for `space.temperature`.")
    soft_weight: list[NonNegFloat] = Field(default_factory=list, description="Shorthand for `space.soft_weight`.")
    hard_weight: list[NonNegFloat] = Field(default_factory=list, description="Shorthand for `space.hard_weight`.")
    pruner: Literal["median", "none"] = Field(
        "median",
        description="`median`: stop a trial whose per-epoch selection top-1 falls below the median of earlier "
        "trials at the same epoch; `none`: every trial runs its epochs.",
    )
    pruner_startup_trials: int = Field(3, ge=0, description="`median`: trials that finish before any is pruned.")
    selection_split: float = Field(
        0.1,
        gt=0,
        lt=1,
        description="Share of the training images held out (seeded by `seed`) to score trials; a trial never trains "
        "on them, nor re-estimates its BatchNorm statistics on them.",
    )
    max_retry: int = Field(
        2,
        ge=0,
        description="Times a trial whose worker died (no heartbeat) is retried with the same settings; database "
        "storages only (a journal file has no heartbeats, and refuses this field).",
    )
    heartbeat_seconds: int = Field(
        10,
        ge=1,
        description="Seconds between a running trial's heartbeats; a trial silent for twice this is marked failed. "
        "Database storages only (a journal file has no heartbeats, and refuses this field).",
        json_schema_extra={"key": False},
    )

    @model_validator(mode="after")
    def _check(self) -> SweepConfig:
        for name in ("temperature", "soft_weight", "hard_weight"):
            values = getattr(self, name)
            if values and name in self.space:
                raise ValueError(f"{name}: given both as sweep.{name} and in sweep.space; keep one")
        for name, values in self.search_space.items():
            if search_type(name) is None:
                raise ValueError(
                    f"space.{name}: not a searchable distill setting; valid: {', '.join(SEARCHABLE)}, "
                    "features.<i>.weight, or <temperature|soft_weight|hard_weight>.<schedule parameter>"
                )
            head = name.split(".", 1)[0]
            if head != name and head in self.search_space:
                raise ValueError(f"space.{name}: {head} itself is searched too; search {head} or its parameters")
            if self.sampler == "grid" and isinstance(values, SearchRange):
                raise ValueError(f"space.{name}: sampler grid needs a list of values, not a range (or use tpe/random)")
        if not self.search_space:
            raise ValueError("sweep: nothing to search; list values (temperature: [2, 8]) or ranges under `space`")
        return self

    @property
    def search_space(self) -> dict[str, list[float] | SearchRange]:
        """Every searched setting: `space` and the shorthand lists, in a fixed order."""
        out: dict[str, list[float] | SearchRange] = {}
        for name in SEARCHABLE:
            values = self.space.get(name) or getattr(self, name, None)
            if values:
                out[name] = values
        out.update({k: v for k, v in self.space.items() if k not in out})  # unknown names: refused by _check
        return out

    @property
    def grid_size(self) -> int:
        size = 1
        for values in self.search_space.values():
            size *= len(values) if isinstance(values, list) else 1
        return size

    @property
    def n_trials(self) -> int:
        return self.trials or (self.grid_size if self.sampler == "grid" else 10)


# --------------------------------------------------------------------------- quantization and export


class ExportConfig(Section):
    """TorchScript and ONNX export with parity checks."""

    enabled: bool = True
    torchscript: Literal["trace", "script", "off"] = Field(
        "trace", description="TorchScript by tracing or scripting, or off."
    )
    onnx: bool = Field(True, description="Export ONNX.")
    opset: int = Field(17, ge=13, le=21, description="ONNX opset; TensorRT 8.5 on JetPack 5.1 parses 13 to 17.")
    dynamic_batch: bool = Field(True, description="Dynamic batch axis on input and output.")
    simplify: bool = Field(False, description="Simplify the ONNX graph with onnxslim when installed.")
    teacher: bool = Field(True, description="Export the teacher too, so benchmarks compare like with like.")
    parity_batch: int = Field(32, ge=1, description="Validation images used for the parity check.")
    atol: PositiveFloat = Field(
        1e-3, description="Allowed logit difference from the eager model: atol + rtol x max |logit|."
    )
    rtol: NonNegFloat = Field(
        1e-4, description="Share of the largest |logit| added to atol (float rounding grows with the logits' scale)."
    )
    min_agreement: float = Field(0.99, ge=0, le=1, description="Minimum top-1 agreement with the eager model.")
    fp16_onnx: bool = Field(
        True,
        description="Also write an fp16 copy of each ONNX (fp32 inputs and outputs), which TensorRT >= 10 builds "
        "fp16 engines from; checked against the fp32 ONNX in ONNX Runtime.",
    )
    fp16_rtol: PositiveFloat = Field(
        0.01, description="Maximum |Δlogit| of the fp16 ONNX from the fp32 one, as a share of its largest |logit|."
    )


class QatConfig(OptimConfig):
    """Quantization-aware fine-tuning of the distilled student (int8, Q/DQ ONNX)."""

    enabled: bool = True
    epochs: int = Field(3, ge=0)
    lr: PositiveFloat = Field(0.005)
    distill: bool = Field(True, description="Keep distilling from the teacher during QAT (else hard labels only).")
    activation_ranges: Literal["fixed", "moving_average"] = Field(
        "fixed",
        description="Activation ranges during QAT: `fixed` at their calibrated values (as pytorch-quantization and "
        "Model Optimizer keep them), or a `moving_average` of each training batch's max |x| (`ema_momentum`), "
        "frozen for the last `freeze_observers_epochs`. Weight ranges always follow the weights.",
    )
    freeze_observers_epochs: int = Field(
        1, ge=0, description="`moving_average` ranges: freeze them for the last N epochs."
    )
    calibration_batches: int = Field(8, ge=1, description="Batches used to initialise activation ranges.")
    ema_momentum: float = Field(
        0.01,
        gt=0,
        le=1,
        description="Weight of each batch's max |activation| in the moving average of the ranges during QAT.",
    )
    ptq: bool = Field(
        True, description="Also produce a post-training static int8 model (calibration only) for comparison."
    )
    max_accuracy_drop: NonNegFloat = Field(
        1.0, description="Warn when int8 top-1 falls further than this (points) below fp32."
    )
    max_below_ptq: NonNegFloat = Field(
        1.0,
        description="A QAT int8 file more than this many points (val top-1) under the PTQ file of the same "
        "student is recorded as failed, with the reason, and the PTQ file is the int8 that ships.",
    )
    calibration: Literal["max", "percentile", "entropy", "mse"] = Field(
        "max",
        description="How activation ranges are set from the calibration batches (training data), for QAT and PTQ: "
        "max |x|, a percentile of |x|, or the histogram range with the least KL divergence (entropy) or MSE.",
    )
    percentile: float = Field(99.99, gt=50, le=100, description="`percentile` calibration: the percentile of |x|.")
    freeze_bn_epochs: int = Field(
        0, ge=0, description="Use BatchNorm running statistics (frozen) for the last N QAT epochs."
    )
    keep_float: list[str] = Field(
        default_factory=list, description="Conv2d/Linear layers (module paths) left in float: no Q/DQ around them."
    )
    auto_keep_float: bool = Field(
        False,
        description="Keep the most sensitive layers float, one at a time, until the int8 drop on the sensitivity "
        "split meets benchmark.budget.max_drop_vs_student (at most max_keep_float layers).",
    )
    max_keep_float: int = Field(3, ge=1, description="`auto_keep_float`: most layers kept float.")
    sensitivity: bool = Field(
        False, description="Measure per-layer sensitivity (each layer left float in turn) into the stage metrics."
    )
    sensitivity_images: int = Field(
        512, ge=16, description="Training images (never validation) that sensitivity and auto_keep_float score on."
    )
    bn_reestimate: BnReestimate = Field("auto", description=BN_REESTIMATE_HELP)
    watch_every: int = Field(
        10,
        ge=0,
        description="Collapse watch: every N training steps, check the activation ranges and the top-1 on "
        "`watch_images` training images; stop with an error when a range grew `watch_growth` times over its "
        "calibrated value, the loss or a weight is not finite, or the top-1 stays at chance (0: off).",
    )
    watch_images: int = Field(256, ge=16, description="Collapse watch: training images it scores on.")
    watch_growth: float = Field(
        100.0, gt=1, description="Collapse watch: a range this many times its calibrated value stops QAT."
    )


class DynamicQuantConfig(Section):
    """Dynamic int8 quantization for CPU deployment (PyTorch and ONNX Runtime)."""

    enabled: bool = True
    torch: bool = Field(True, description="PyTorch dynamic int8 of Linear/LSTM/GRU layers, saved as TorchScript.")
    onnx: bool = Field(True, description="ONNX Runtime dynamic int8 of the exported ONNX.")


class TensorRTConfig(Section):
    """TensorRT engines built on this host when TensorRT and a CUDA GPU exist."""

    enabled: bool = True
    precisions: list[Literal[ENGINE_PRECISIONS]] = Field(default_factory=lambda: ["fp16", "int8"])
    dla_core: int | None = Field(None, ge=0, le=1, description="DLA core (Xavier has 0 and 1) with GPU fallback.")
    static_shapes: bool = Field(False, description="Build for a fixed batch (keeps more layers on DLA).")
    workspace_mb: int = Field(1024, ge=16)
    min_batch: int = Field(1, ge=1)
    opt_batch: int = Field(8, ge=1)
    max_batch: int = Field(32, ge=1)
    calibration_images: int = Field(
        512,
        ge=1,
        description="Training images drawn (seeded) into export/calib.npz by the export stage to calibrate int8 "
        "on the DLA (implicit quantization), and the calibrated fallback of a Q/DQ int8 engine that TensorRT "
        "fails to build; never validation images.",
    )

    @model_validator(mode="after")
    def _check(self) -> TensorRTConfig:
        from edgekd.ondevice.trt_options import BuildOptions, validate_options

        for precision in self.precisions:  # the checks the build applies, here at load time (validate, plan, run)
            opts = BuildOptions(
                precision,
                self.dla_core,
                self.static_shapes,
                self.workspace_mb,
                self.min_batch,
                self.opt_batch,
                self.max_batch,
            )
            problems = validate_options(opts)
            if problems:
                raise ValueError(f"{problems[0]} (precision {precision})")
        return self


# --------------------------------------------------------------------------- benchmark and report


class BudgetConfig(Section):
    """Accuracy budget that marks each artifact within or over."""

    max_drop_vs_teacher: NonNegFloat = Field(3.0, description="Maximum top-1 drop versus the teacher, in points.")
    max_drop_vs_student: NonNegFloat = Field(
        1.0, description="Maximum top-1 drop of quantized artifacts versus the fp32 student, in points."
    )
    latency_ms: dict[Annotated[str, Field(pattern=f"^{PLAIN_NAME}$")], PositiveFloat] = Field(
        default_factory=dict,
        description="Latency budget per device (`local` or a devices.yaml name): p50 in ms at `latency_batch`, "
        "judged on the artifact that ships to that device; the scout and `student.model: auto` use it too.",
    )
    latency_batch: int = Field(1, ge=1, le=4096, description="Batch size at which `latency_ms` is judged.")


class BenchmarkConfig(TimingConfig):
    """Latency and accuracy of every artifact on this machine."""

    enabled: bool = True
    device_name: str = Field(
        "local",
        pattern=f"^{PLAIN_NAME}$",
        description="Name of this machine in reports (bench/<name>.json): a plain name.",
    )
    repeat_unstable: int = Field(
        0,
        ge=0,
        description="Re-measure artifacts with unstable figures up to this many times (`edgekd bench --repeat-unstable`).",
    )
    budget: BudgetConfig = Field(default_factory=BudgetConfig)

    @model_validator(mode="after")
    def _budget_batch_timed(self) -> BenchmarkConfig:
        if self.budget.latency_ms and self.budget.latency_batch not in self.batch_sizes:
            raise ValueError(
                f"budget.latency_batch: {self.budget.latency_batch} is not timed; add it to batch_sizes "
                f"{self.batch_sizes} or pick one of them"
            )
        return self


# --------------------------------------------------------------------------- the pipeline


class PipelineConfig(Section):
    """A whole pipeline.yaml."""

    name: str = Field(
        ...,
        pattern=f"^{PLAIN_NAME}$",
        description="Pipeline name (a plain name); the run directory defaults to runs/<name>.",
    )
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Seed for data splits, initialisation and shuffling.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where training runs; `auto` takes CUDA when present."
    )
    run_dir: Path | None = Field(None, description="Run directory (default runs/<name> beside the current directory).")
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: TeacherConfig
    student: StudentConfig
    distill: DistillConfig = Field(default_factory=DistillConfig)
    baseline: BaselineConfig = Field(default_factory=BaselineConfig)
    sweep: SweepConfig | None = None
    scout: ScoutConfig = Field(default_factory=ScoutConfig)
    qat: QatConfig = Field(default_factory=QatConfig)
    dynamic_quant: DynamicQuantConfig = Field(default_factory=DynamicQuantConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    tensorrt: TensorRTConfig = Field(default_factory=TensorRTConfig)
    benchmark: BenchmarkConfig = Field(default_factory=BenchmarkConfig)

    source: Path | None = Field(None, exclude=True, description="The YAML file this came from (set by the loader).")

    @field_validator("sweep")
    @classmethod
    def _space_fits_distill(cls, sweep: SweepConfig | None, info: ValidationInfo) -> SweepConfig | None:
        """Every searched path exists in this distill section and takes every value the sweep may give it."""
        distill = info.data.get("distill")
        if sweep is None or distill is None:
            return sweep
        valid = search_paths(distill)
        for path, values in sweep.search_space.items():
            if path not in valid:
                raise ValueError(f"space.{path}: not in this pipeline's distill section; valid: {', '.join(valid)}")
            kind = search_type(path)
            for value in (values.low, values.high) if isinstance(values, SearchRange) else values:
                try:
                    with_settings(distill, {path: kind(value)})
                except ValidationError as e:  # a schedule's error, not the "a number" branch of its union
                    errors = [x for x in e.errors() if not isinstance(x.get("input"), dict)] or e.errors()
                    why = errors[0]["msg"].removeprefix("Value error, ")
                    raise ValueError(f"space.{path}: {value:g} is not a valid distill.{path} ({why})") from None
        return sweep

    @model_validator(mode="after")
    def _auto_has_budget(self) -> PipelineConfig:
        if not self.student.auto:
            return self
        device = self.scout.devices[0]
        if device not in self.benchmark.budget.latency_ms:
            raise ValueError(
                f"student.model auto picks within benchmark.budget.latency_ms.{device} (scout.devices[0]); "
                f"set it, e.g. `latency_ms: {{{device}: 5.0}}`"
            )
        for field, names in (("distill.features", self.distill.features), ("qat.keep_float", self.qat.keep_float)):
            if names:
                raise ValueError(
                    f"{field} names student layers, but with student.model auto the student is not known before "
                    f"the scout runs; drop {field} or name the student"
                )
        return self
