"""Checks run before the first stage so a typo, a missing weights file or a bad image costs seconds, not a teacher."""

from __future__ import annotations

import stat
from pathlib import Path

from edgekd.config import PipelineConfig
from edgekd.errors import EdgekdError
from edgekd.models import build_model
from edgekd.models.taps import check_layer_names
from edgekd.models.weights import describe_weights, require_available


def check_pipeline(cfg: PipelineConfig, local_files: bool = False) -> None:
    """Model and weights names exist, feature layers exist; with `local_files` (before a run) also that the
    weights files are here (or may be downloaded) and that the ImageFolder scans clean.

    `edgekd validate` leaves `local_files` off: a pipeline written for another machine still validates.
    """
    models = {}
    for role in ("teacher", "student"):
        section = getattr(cfg, role)
        if section.model is None:  # student.prune: the student is the teacher, pruned
            models[role] = models["teacher"]
            continue
        if role == "student" and cfg.student.auto:  # the scout picks it (config refuses student layer names)
            continue
        try:
            models[role] = build_model(section.model, num_classes=10, in_channels=cfg.data.channels or 3)
        except EdgekdError as e:
            raise EdgekdError(f"{role}.model: {e}") from None
        if section.weights:
            field = f"{role}.weights"
            weights = describe_weights(section.model, section.weights, field)
            if local_files:
                require_available(weights, section.download, field)
    for i, pair in enumerate(cfg.distill.features):
        for role in ("teacher", "student"):
            try:
                check_layer_names(models[role], [getattr(pair, role)], what=f"{role} {getattr(cfg, role).model}")
            except EdgekdError as e:
                raise EdgekdError(f"distill.features[{i}].{role}: {e}") from None
    if cfg.student.prune is not None:  # names, Torch-Pruning installed, and its graph of this model: before training
        from edgekd.prune.pruner import check_prunable

        check_prunable(models["teacher"], cfg.student.prune, cfg.data.channels or 3, cfg.data.image_size)
        from edgekd.fleet.timing import prune_target

        prune_target(cfg.student.prune)  # a device devices.yaml does not define: before the teacher trains
    if cfg.student.auto:  # a device devices.yaml does not define stops the run here, not after the teacher trained
        from edgekd.search.scout import targets

        targets(cfg.scout.devices, cfg.scout.devices_file)
    from edgekd.search.candidates import check_names

    check_names(cfg.scout.candidates)  # a misspelt candidate: before anything is built
    if cfg.qat.enabled and cfg.qat.keep_float:  # found here, not after the teacher and the student have trained
        from edgekd.quant.qat import check_keep_float

        check_keep_float(models["student"], cfg.qat.keep_float)
    if local_files and cfg.data.dataset == "imagefolder":
        from edgekd.data.scan import scan_imagefolder

        scan_imagefolder(cfg.data.root, cfg.data.on_bad_image)


def _regular_file(path: Path, field: str, what: str) -> None:
    try:
        info = path.stat()
    except OSError as e:
        raise EdgekdError(f"{field}: {path}: {what} not found ({e.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise EdgekdError(f"{field}: {path} is {kind}; expected {what}")


def _folder(path: Path, field: str, what: str) -> None:
    if not path.is_dir():
        found = "not found" if not path.exists() else "not a folder"
        raise EdgekdError(f"{field}: {path} is {found}; expected {what}")


def check_files(cfg: PipelineConfig) -> None:
    """The files the stages will open, checked the way the stages open them: checkpoints are regular files
    (not folders, not devices like /dev/zero), a data root is a folder, an imagefolder root holds train/ and val/."""
    for field, path in (
        ("teacher.checkpoint", cfg.teacher.checkpoint),
        ("student.init_checkpoint", cfg.student.init_checkpoint),
    ):
        if path is not None:
            _regular_file(path, field, "a checkpoint file (.pt/.pth)")
    data = cfg.data
    if data.root is not None and data.dataset != "digits" and not (data.download and not data.root.exists()):
        _folder(data.root, "data.root", f"the folder holding the {data.dataset} data")
        if data.dataset == "imagefolder":
            for split in ("train", "val"):
                _folder(data.root / split, "data.root", f"{split}/<class>/<images> under {data.root}")
    if cfg.run_dir is not None and cfg.run_dir.exists() and not cfg.run_dir.is_dir():
        raise EdgekdError(f"run_dir: {cfg.run_dir} exists and is not a folder")
