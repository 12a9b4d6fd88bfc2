"""Which preprocessing the pipeline's images get, and which the teacher expects.

The images are prepared once, the way the student expects them (it is what ships): the data section's
explicit `image_size`/`mean`/`std`, else the student's pretrained weights' own, else the data set's usual
values. The teacher takes the same tensors; when its weights (or `teacher.image_size/mean/std`) want
other values, its model converts them on the way in (see edgekd.models.inputs.attach_input_adapter).
"""

from __future__ import annotations

from edgekd.config import DataConfig, PipelineConfig, StudentConfig, TeacherConfig
from edgekd.models.inputs import InputSpec, default_resize

STATS = {  # the usual per-channel mean/std of each set
    "digits": ((0.3,), (0.4,)),
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagefolder": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


def weights_inputs(section: TeacherConfig | StudentConfig, field: str) -> InputSpec | None:
    """The preprocessing a model's pretrained weights were trained with (None without weights or metadata)."""
    if not section.weights:
        return None
    from edgekd.models.weights import describe_weights

    return describe_weights(section.model, section.weights, field).inputs


def _merge(base: InputSpec, explicit: dict) -> InputSpec:
    size = explicit.get("image_size", base.image_size)
    resize = base.resize_size if size == base.image_size else default_resize(size)
    return InputSpec(size, resize, tuple(explicit.get("mean", base.mean)), tuple(explicit.get("std", base.std)))


def data_inputs(data: DataConfig, student: StudentConfig) -> InputSpec:
    """What every image of the pipeline is turned into (and what the exported student expects)."""
    mean, std = STATS[data.dataset]
    base = weights_inputs(student, "student.weights") or InputSpec(
        data.image_size, default_resize(data.image_size), mean, std
    )
    explicit = {k: getattr(data, k) for k in ("image_size", "mean", "std") if k in data.model_fields_set}
    return _merge(base, {k: v for k, v in explicit.items() if v is not None})


def teacher_inputs(cfg: PipelineConfig, given: InputSpec) -> InputSpec:
    """What the teacher expects: `teacher.image_size/mean/std`, else its weights' own, else `given` (the pipeline's)."""
    base = weights_inputs(cfg.teacher, "teacher.weights") or given
    explicit = {k: getattr(cfg.teacher, k) for k in ("image_size", "mean", "std")}
    return _merge(base, {k: v for k, v in explicit.items() if v is not None})
