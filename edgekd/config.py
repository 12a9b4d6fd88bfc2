"""Typed models of pipeline.yaml and devices.yaml: the only place that knows the YAML shape.

Every section is a pydantic model with ``extra="forbid"``, so a typo is an error
that names the key, its line in the file and the nearest valid key
(see :func:`load_pipeline`). Relative paths resolve against the YAML file's folder.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from edgekd.errors import EdgekdError
from edgekd.ondevice.text import did_you_mean


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


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
    batch_size: int = Field(64, ge=1, description="Training batch size.")
    eval_batch_size: int = Field(256, ge=1, description="Batch size for validation passes.")
    num_workers: int | None = Field(
        None, ge=0, description="DataLoader worker processes for file-backed data sets; default: the cores, at most 8."
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


class StudentConfig(Section):
    """The small model to distil into; its input (data section) is what the exported model expects."""

    model: str = Field(..., description="Model name from the registry, or `timm/<name>`.")
    init_checkpoint: Path | None = Field(None, description="Optional state_dict to start the student from.")
    weights: str | None = Field(None, description=_WEIGHTS_HELP)
    download: bool = Field(
        False, description="Let torchvision/timm download missing `weights` into their cache (or --allow-download)."
    )

    @model_validator(mode="after")
    def _one_start(self) -> StudentConfig:
        if self.weights and self.init_checkpoint:
            raise ValueError("give either student.weights or student.init_checkpoint, not both")
        return self


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
    channels_last: bool = Field(False, description="channels-last memory format on CUDA.")

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
    **_inheriting("distill"),
)


class SweepConfig(Section):
    """Grid over distillation settings; the best by val top-1 goes on to the later stages."""

    temperature: list[PositiveFloat] = Field(default_factory=list)
    soft_weight: list[NonNegFloat] = Field(default_factory=list)
    hard_weight: list[NonNegFloat] = Field(default_factory=list)


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
    freeze_observers_epochs: int = Field(1, ge=0, description="Freeze the activation ranges for the last N epochs.")
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


class DynamicQuantConfig(Section):
    """Dynamic int8 quantization for CPU deployment (PyTorch and ONNX Runtime)."""

    enabled: bool = True
    torch: bool = Field(True, description="PyTorch dynamic int8 of Linear/LSTM/GRU layers, saved as TorchScript.")
    onnx: bool = Field(True, description="ONNX Runtime dynamic int8 of the exported ONNX.")


class TensorRTConfig(Section):
    """TensorRT engines built on this host when TensorRT and a CUDA GPU exist."""

    enabled: bool = True
    precisions: list[Literal["fp32", "fp16", "int8"]] = Field(default_factory=lambda: ["fp16", "int8"])
    dla_core: int | None = Field(None, ge=0, le=1, description="DLA core (Xavier has 0 and 1) with GPU fallback.")
    static_shapes: bool = Field(False, description="Build for a fixed batch (keeps more layers on DLA).")
    workspace_mb: int = Field(1024, ge=16)
    min_batch: int = Field(1, ge=1)
    opt_batch: int = Field(8, ge=1)
    max_batch: int = Field(32, ge=1)
    calibration_images: int = Field(
        512,
        ge=1,
        description="Training images drawn (seeded) into bench/calib.npz to calibrate int8 on the DLA "
        "(implicit quantization); never validation images.",
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


class BenchmarkConfig(Section):
    """Latency and accuracy of every artifact on this machine."""

    enabled: bool = True
    device_name: str = Field("local", description="Name of this machine in reports (bench/<name>.json).")
    batch_sizes: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [1, 8])
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
    threads: int | None = Field(None, ge=1, description="CPU threads for every runtime; default: all cores.")
    repeat_unstable: int = Field(
        0,
        ge=0,
        description="Re-measure artifacts with unstable figures up to this many times (`edgekd bench --repeat-unstable`).",
    )
    budget: BudgetConfig = Field(default_factory=BudgetConfig)


# --------------------------------------------------------------------------- the pipeline


class PipelineConfig(Section):
    """A whole pipeline.yaml."""

    name: str = Field(
        ..., pattern=r"^[A-Za-z0-9_.-]+$", description="Pipeline name; the run directory defaults to runs/<name>."
    )
    seed: int = Field(0, description="Seed for data splits, initialisation and shuffling.")
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
    qat: QatConfig = Field(default_factory=QatConfig)
    dynamic_quant: DynamicQuantConfig = Field(default_factory=DynamicQuantConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    tensorrt: TensorRTConfig = Field(default_factory=TensorRTConfig)
    benchmark: BenchmarkConfig = Field(default_factory=BenchmarkConfig)

    source: Path | None = Field(None, exclude=True, description="The YAML file this came from (set by the loader).")


# --------------------------------------------------------------------------- loading


MAX_YAML_ALIASES = 64
MAX_YAML_VALUES = 50_000
"""Budgets for YAML anchors: a real pipeline uses a few aliases and a few hundred values; an alias bomb
(aliases of aliases) would expand to billions, so it is refused before anything walks or validates it."""


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses more than MAX_YAML_ALIASES aliases while composing."""

    def __init__(self, text: str, where: str) -> None:
        super().__init__(text)
        self.where, self.aliases = where, 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_YAML_ALIASES:
                line = self.peek_event().start_mark.line + 1
                raise EdgekdError(
                    f"{self.where}:{line}: more than {MAX_YAML_ALIASES} YAML aliases (*name); write the values out"
                )
        return super().compose_node(parent, index)


def _compose(text: str, where: str) -> yaml.Node | None:
    """The YAML node tree, refused when its aliases are too many or would expand past MAX_YAML_VALUES values."""
    loader = _BoundedLoader(text, where)
    try:
        root = loader.get_single_node()
    except RecursionError:
        raise EdgekdError(f"{where}: YAML nested too deeply") from None
    finally:
        loader.dispose()
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:  # counted once per node object: linear even for an alias bomb
        if id(node) not in sizes:
            sizes[id(node)] = 1  # a recursive alias counts once
            if isinstance(node, yaml.MappingNode):
                children = [n for pair in node.value for n in pair]
            else:
                children = node.value if isinstance(node, yaml.SequenceNode) else []
            sizes[id(node)] = min(1 + sum(size(c) for c in children), MAX_YAML_VALUES + 1)
        return sizes[id(node)]

    try:
        total = size(root) if root is not None else 0
    except RecursionError:
        raise EdgekdError(f"{where}: YAML nested too deeply") from None
    if total > MAX_YAML_VALUES:
        raise EdgekdError(
            f"{where}: YAML aliases expand to more than {MAX_YAML_VALUES} values (an alias bomb?); write the values out"
        )
    return root


def _load_yaml(text: str, where: str) -> Any:
    """yaml.safe_load, after _compose has checked the alias budgets."""
    _compose(text, where)
    return yaml.safe_load(text)


def _key_lines(text: str, where: str = "pipeline.yaml") -> dict[tuple, int]:
    """Map each key path in a YAML document to its 1-based line number; a key given twice is an error."""
    lines: dict[tuple, int] = {}

    def walk(node: yaml.Node, path: tuple) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = (*path, k.value)
                if key in lines:  # yaml.safe_load would silently keep the last one
                    dotted = ".".join(str(p) for p in key)
                    raise EdgekdError(
                        f"{where}:{k.start_mark.line + 1}: duplicate key '{dotted}' (first given on line {lines[key]})"
                    )
                lines[key] = k.start_mark.line + 1
                walk(v, key)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[(*path, i)] = item.start_mark.line + 1
                walk(item, (*path, i))

    root = _compose(text, where)
    if root is not None:
        walk(root, ())
    return lines


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The section model that holds the field at `loc` (None if it cannot be followed)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            continue
        field = current.model_fields.get(part)
        if field is None:
            return None if part not in ("phases",) else current
        current = _first_model(field.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _first_model(annotation: Any) -> Any:
    """The first BaseModel class inside an annotation (Optional[X], list[X], ...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _first_model(arg)
        if found is not None:
            return found
    return None


def _format_error(err: dict, lines: dict[tuple, int], where: str) -> str:
    raw = tuple(err["loc"])
    last = len(raw) - 1 if err["type"] == "extra_forbidden" else -1  # an unknown key is never a union tag
    loc = tuple(
        p
        for i, p in enumerate(raw)
        if i == last or not (isinstance(p, str) and (p in _TAGS or p.startswith(_TAG_PREFIXES)))
    )
    dotted = ".".join(str(p) for p in loc) or "(top level)"
    line = None
    for n in range(len(loc), 0, -1):
        if loc[:n] in lines:
            line = lines[loc[:n]]
            break
    place = f"{where}:{line}" if line else where
    if err["type"] == "extra_forbidden":
        parent = _model_at(PipelineConfig, loc[:-1])
        valid = sorted(parent.model_fields) if parent else []
        valid = [v for v in valid if v != "source"]
        hint = did_you_mean(str(loc[-1]), valid)
        return f"{place}: unknown key '{dotted}'; {hint}valid keys here: {', '.join(valid)}"
    if err["type"] == "missing":
        return f"{place}: missing required key '{dotted}'"
    msg = err["msg"].removeprefix("Value error, ")
    got = err.get("input")
    shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
    return f"{place}: {dotted}: {msg}{shown}"


_TAGS = {
    "constant",
    "linear",
    "cosine",
    "phases",
    "adaptive",
    "float",
    "function-after[_positive_temperature(), union[...]]",
}
_TAG_PREFIXES = ("tagged-union[", "constrained-", "function-after[")


def _relevant(errors: list) -> list:
    """Errors worth showing first: unknown keys (a typo also makes its key "missing", and the unknown-key
    error names the nearest valid key), without the "a number" branch of a number-or-schedule field given a mapping."""
    kept = [e for e in errors if not (e["type"] == "float_type" and isinstance(e.get("input"), dict))] or errors
    return sorted(kept, key=lambda e: e["type"] != "extra_forbidden")


def is_weights_file(weights: str) -> bool:
    """A `weights:` value that names a file (not an enum or timm tag)."""
    return "/" in weights or "\\" in weights or weights.endswith((".pt", ".pth", ".bin", ".safetensors"))


def _resolve_paths(cfg: PipelineConfig, base: Path) -> None:
    def fix(p: Path | None) -> Path | None:
        if p is None:
            return None
        p = p.expanduser()
        return p if p.is_absolute() else (base / p).resolve()

    cfg.data.root = fix(cfg.data.root)
    cfg.teacher.checkpoint = fix(cfg.teacher.checkpoint)
    cfg.student.init_checkpoint = fix(cfg.student.init_checkpoint)
    for section in (cfg.teacher, cfg.student):
        if section.weights and is_weights_file(section.weights):
            section.weights = str(fix(Path(section.weights)))
    if cfg.run_dir is not None:
        cfg.run_dir = fix(cfg.run_dir)


def parse_pipeline(
    data: Any, where: str = "pipeline.yaml", text: str | None = None, base: Path | None = None
) -> PipelineConfig:
    """Validate an already-loaded YAML document; errors become one-line EdgekdErrors."""
    if not isinstance(data, dict):
        got = "an empty document" if data is None else type(data).__name__
        raise EdgekdError(f"{where}: expected a mapping of sections (name, data, teacher, student, ...), got {got}")
    lines = _key_lines(text, where) if text else {}
    try:
        cfg = PipelineConfig.model_validate(data)
    except ValidationError as e:
        errors = _relevant(e.errors())
        first = _format_error(errors[0], lines, where)
        more = f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
        raise EdgekdError(first + more) from None
    if base is not None:
        _resolve_paths(cfg, base)
    return cfg


def load_pipeline(path: str | Path) -> PipelineConfig:
    """Read, validate and resolve a pipeline.yaml."""
    path = Path(path)
    if not path.is_file():
        raise EdgekdError(f"{path}: pipeline file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise EdgekdError(f"{path}: cannot read the pipeline file: {e}") from None
    try:
        data = _load_yaml(text, str(path))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise EdgekdError(f"{path}{line}: malformed YAML: {problem}") from None
    if isinstance(data, dict) and "name" not in data:
        data = {"name": path.stem, **data}
    cfg = parse_pipeline(data, where=str(path), text=text, base=path.parent.resolve())
    cfg.source = path.resolve()
    return cfg


# --------------------------------------------------------------------------- devices.yaml


class DeviceBenchConfig(Section):
    """How the on-device benchmark times each artifact (same meaning as the pipeline's `benchmark` section)."""

    batch_sizes: list[Annotated[int, Field(ge=1)]] = Field(
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
    threads: int | None = Field(None, ge=1, description="CPU threads for ONNX Runtime; default: all cores.")


DEVICE_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$"
"""A plain name, safe as a file name (never `.`, `..` or hidden): it names bench/<name>.json and tensorrt/<name>/."""


class DeviceConfig(Section):
    """One edge device reached over SSH (system OpenSSH: ~/.ssh/config, the agent and ProxyJump apply)."""

    host: str = Field(
        ..., pattern=r"^[A-Za-z0-9_.:\[\]-]+$", description="Host name, IP address, or a Host alias from ~/.ssh/config."
    )
    user: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_.-]+$", description="Login name; default: ~/.ssh/config's User, else your own."
    )
    port: int | None = Field(None, ge=1, le=65535, description="SSH port; default: ~/.ssh/config's Port, else 22.")
    identity_file: Path | None = Field(
        None, description="Private key file (ssh -i); default: the agent and ~/.ssh/config."
    )
    ssh_config: Path | None = Field(None, description="An ssh_config file to use instead of ~/.ssh/config (ssh -F).")
    ssh_options: list[str] = Field(
        default_factory=list,
        description="Extra `Key=Value` ssh options (ssh -o), e.g. `UserKnownHostsFile=~/.ssh/jetson_known_hosts`. Host key checking cannot be turned off.",
    )
    kind: str = Field(
        ...,
        pattern=r"^[a-z0-9][a-z0-9_.-]*$",
        description="Device kind, e.g. `jetson-agx-xavier`; engines are shared between devices of one kind and TensorRT version.",
    )
    workdir: str = Field(
        "edgekd",
        pattern=r"^[A-Za-z0-9_./-]+$",
        description="Folder on the device for bundles, engines and results; relative paths are under the login's home.",
    )
    python: str = Field(
        "python3",
        pattern=r"^[A-Za-z0-9_./+-]+$",
        description="Python 3.8+ on the device (with numpy, and tensorrt + pycuda or onnxruntime).",
    )
    backends: list[Literal["tensorrt", "onnxruntime"]] = Field(
        default_factory=lambda: ["tensorrt"],
        min_length=1,
        description="What the device benchmarks: TensorRT engines built there, and/or the ONNX files in ONNX Runtime.",
    )
    ort_providers: list[str] = Field(
        default_factory=lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"],
        description="ONNX Runtime providers in order of preference; those the device lacks are dropped.",
    )
    record_power_mode: bool = Field(True, description="Record `nvpmodel -q` (the Jetson power mode) in the bench file.")
    lock_clocks: bool = Field(
        False,
        description="Run `jetson_clocks` (with your sudo rights, non-interactive) for the bench and restore the previous clocks afterwards.",
    )
    connect_timeout_s: int = Field(10, ge=1, description="Seconds to wait for the SSH connection.")
    command_timeout_s: int = Field(3600, ge=1, description="Seconds a remote build + benchmark, or one copy, may take.")
    tensorrt: TensorRTConfig = Field(
        default_factory=TensorRTConfig, description="How engines are built on this device."
    )
    benchmark: DeviceBenchConfig = Field(
        default_factory=DeviceBenchConfig, description="How the device times each artifact."
    )

    name: str = Field("", exclude=True, description="The device's name: its key under `devices` (set by the loader).")

    @field_validator("ssh_options")
    @classmethod
    def _check_ssh_options(cls, options: list[str]) -> list[str]:
        for opt in options:
            key, sep, value = opt.partition("=")
            if not sep or not key.isalpha() or not value.strip():
                raise ValueError(f"ssh option {opt!r} is not `Key=Value` (e.g. `UserKnownHostsFile=/path/known_hosts`)")
            try:
                words = [w.lower() for w in shlex.split(value)]  # as OpenSSH reads it: quotes removed, any case
            except ValueError:
                raise ValueError(f"ssh option {opt!r} has unbalanced quotes") from None
            if key.lower() == "stricthostkeychecking" and words not in (["yes"], ["ask"]):
                raise ValueError(
                    f"ssh option {opt!r} would accept unchecked host keys (only yes or ask are allowed); "
                    "add the device's key to a known_hosts file (ssh-keyscan, after checking it) instead"
                )
            if key.lower() in ("userknownhostsfile", "globalknownhostsfile") and any(
                w == "none" or os.path.realpath(os.path.expanduser(w)) == os.devnull for w in words
            ):
                raise ValueError(f"ssh option {opt!r} throws known host keys away; name a real known_hosts file")
        return options

    @field_validator("host")
    @classmethod
    def _check_host(cls, host: str) -> str:
        if host.startswith("-"):
            raise ValueError(f"host {host!r} cannot start with '-'")
        return host

    @model_validator(mode="after")
    def _check_device(self) -> DeviceConfig:
        if self.workdir.startswith("-") or ".." in self.workdir.split("/"):
            raise ValueError(f"workdir {self.workdir!r} must not start with '-' or contain '..'")
        return self


class DevicesConfig(Section):
    """A whole devices.yaml: named devices."""

    devices: dict[Annotated[str, Field(pattern=DEVICE_NAME)], DeviceConfig] = Field(
        default_factory=dict, description="Devices by name; the name is used in bench/<name>.json and tensorrt/<name>/."
    )
    source: Path | None = Field(None, exclude=True, description="The YAML file this came from (set by the loader).")

    def get(self, name: str) -> DeviceConfig:
        """The device called `name`, or an EdgekdError listing the defined ones."""
        if name in self.devices:
            return self.devices[name]
        where = self.source or "devices.yaml"
        hint = did_you_mean(name, list(self.devices))
        defined = ", ".join(sorted(self.devices)) or "none"
        raise EdgekdError(f"{where}: no device named '{name}'; {hint}defined devices: {defined}")


def _devices_model_at(loc: tuple) -> type[BaseModel] | None:
    """The model holding the key at `loc` in devices.yaml (`devices.<name>` steps into DeviceConfig)."""
    if not loc:
        return DevicesConfig
    if loc[0] != "devices" or len(loc) < 2:
        return None
    return _model_at(DeviceConfig, loc[2:])


def load_devices(path: str | Path) -> DevicesConfig:
    """Read and validate a devices.yaml; relative key and config file paths resolve against its folder."""
    path = Path(path)
    if not path.is_file():
        raise EdgekdError(f"{path}: devices file not found")
    try:
        text = path.read_text(encoding="utf-8")
        data = _load_yaml(text, str(path))
    except (OSError, UnicodeDecodeError) as e:
        raise EdgekdError(f"{path}: cannot read the devices file: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise EdgekdError(f"{path}{line}: malformed YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise EdgekdError(f"{path}: expected a mapping with a `devices` key, got {type(data).__name__}")
    lines = _key_lines(text, str(path))
    named = data.get("devices")
    for name in named if isinstance(named, dict) else {}:
        if not isinstance(name, str) or not re.match(DEVICE_NAME, name):
            line = lines.get(("devices", name))
            raise EdgekdError(
                f"{path}{f':{line}' if line else ''}: device name {name!r} is not a plain name "
                "(up to 64 letters, digits, '_', '.', '-', not starting with '.' or '-')"
            )
    try:
        cfg = DevicesConfig.model_validate(data)
    except ValidationError as e:
        errors = _relevant(e.errors())
        err = errors[0]
        more = f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
        if err["type"] == "extra_forbidden":
            loc = tuple(err["loc"])
            parent = _devices_model_at(loc[:-1])
            valid = sorted(k for k in (parent.model_fields if parent else {}) if k not in ("source", "name"))
            hint = did_you_mean(str(loc[-1]), valid)
            line = lines.get(loc)
            place = f"{path}:{line}" if line else str(path)
            dotted = ".".join(str(p) for p in loc)
            raise EdgekdError(
                f"{place}: unknown key '{dotted}'; {hint}valid keys here: {', '.join(valid)}{more}"
            ) from None
        raise EdgekdError(_format_error(err, lines, str(path)) + more) from None
    base = path.parent.resolve()
    for name, device in cfg.devices.items():
        device.name = name
        for field in ("identity_file", "ssh_config"):
            value = getattr(device, field)
            if value is not None:
                value = value.expanduser()
                setattr(device, field, value if value.is_absolute() else (base / value).resolve())
    cfg.source = path.resolve()
    return cfg
