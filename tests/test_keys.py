"""Cache keys: every single change re-runs exactly the stages downstream of it, and `plan` names them beforehand."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from edgekd.config import load_pipeline
from edgekd.pipeline import Runner, StageResult, saved_config
from edgekd.stages import all_stages

pytestmark = pytest.mark.slow

BASE = {
    "name": "keys",
    "seed": 0,
    "data": {"dataset": "digits", "image_size": 8, "batch_size": 64, "limit_train": 128, "limit_val": 64},
    "teacher": {"model": "resnet8", "epochs": 1, "lr": 0.1, "allow_weak": True},  # 1 epoch on 128 images
    "student": {"model": "resnet8"},
    "distill": {"epochs": 1, "lr": 0.1},
    "baseline": {"enabled": True},
    "qat": {"epochs": 1, "calibration_batches": 1, "ptq": False},
    "export": {"parity_batch": 16},
    "benchmark": {"batch_sizes": [1], "warmup": 0, "min_runs": 2, "min_seconds": 0.0, "repeats": 1},
}

TRAINING = ["teacher", "distill", "qat", "dynamic_quant", "export", "benchmark", "report"]
AFTER_STUDENT = ["distill", "qat", "dynamic_quant", "export", "benchmark", "report"]


def _set(doc: dict, dotted: str, value: object) -> None:
    *head, leaf = dotted.split(".")
    for part in head:
        doc = doc.setdefault(part, {})
    doc[leaf] = value


def _write(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _ran(manifest) -> list[str]:
    return [name for name, rec in manifest.stages.items() if rec.status == "done"]


def _plan_runs(runner: Runner) -> list[str]:
    return [e.stage for e in runner.plan() if e.action == "run"]


# (dotted config path, new value, the stages that must re-run)
CHANGES = [
    ("teacher.lr", 0.05, TRAINING),
    ("distill.temperature", 2.0, AFTER_STUDENT),
    ("student.model", "resnet14", ["distill", "baseline", "qat", "dynamic_quant", "export", "benchmark", "report"]),
    ("baseline.lr", 0.02, ["baseline", "report"]),
    ("distill.lr", 0.05, [*AFTER_STUDENT[:1], "baseline", *AFTER_STUDENT[1:]]),
    ("qat.lr", 0.001, ["qat", "benchmark", "report"]),
    ("export.parity_batch", 8, ["qat", "dynamic_quant", "export", "benchmark", "report"]),
    ("export.atol", 0.01, ["export", "benchmark", "report"]),
    ("dynamic_quant.onnx", False, ["dynamic_quant", "benchmark", "report"]),
    ("benchmark.min_runs", 3, ["benchmark", "report"]),
    ("benchmark.budget.max_drop_vs_teacher", 5.0, ["report"]),
    ("distill.tensorboard", True, []),  # log-only: shapes no artifact
    ("data.limit_val", 48, ["teacher", "distill", "baseline", "qat", "dynamic_quant", "export", "benchmark", "report"]),
]


def test_each_change_reruns_exactly_its_downstream_stages(tmp_path):
    doc = yaml.safe_load(yaml.safe_dump(BASE))
    run_dir = tmp_path / "run"
    first = Runner(load_pipeline(_write(tmp_path / "p.yaml", doc)), all_stages(), run_dir).run()
    assert "teacher" in _ran(first) and "report" in _ran(first)
    for dotted, value, expected in CHANGES:
        _set(doc, dotted, value)
        runner = Runner(load_pipeline(_write(tmp_path / "p.yaml", doc)), all_stages(), run_dir)
        planned = _plan_runs(runner)
        ran = _ran(runner.run())
        assert planned == expected, f"plan after changing {dotted}: {planned}"
        assert ran == expected, f"run after changing {dotted}: {ran}"


def test_checkpoint_content_is_part_of_the_key(tmp_path):
    """teacher.checkpoint is hashed by content: the same bytes elsewhere keep the key, other bytes change it."""
    doc = yaml.safe_load(yaml.safe_dump(BASE))
    run_dir = tmp_path / "run"
    stages = [s for s in all_stages() if s.name in ("teacher", "distill")]
    Runner(load_pipeline(_write(tmp_path / "p.yaml", doc)), stages, run_dir).run()
    weights = torch.load(run_dir / "teacher" / "model.pt", weights_only=True)["state_dict"]
    torch.save(weights, tmp_path / "a.pt")
    _set(doc, "teacher.checkpoint", str(tmp_path / "a.pt"))
    runner = Runner(load_pipeline(_write(tmp_path / "p.yaml", doc)), stages, run_dir)
    assert _plan_runs(runner) == ["teacher", "distill"]
    assert _ran(runner.run()) == ["teacher", "distill"]

    (tmp_path / "b.pt").write_bytes((tmp_path / "a.pt").read_bytes())  # same content, other name
    _set(doc, "teacher.checkpoint", str(tmp_path / "b.pt"))
    runner = Runner(load_pipeline(_write(tmp_path / "p.yaml", doc)), stages, run_dir)
    assert _plan_runs(runner) == [] and _ran(runner.run()) == []

    torch.save({k: v + 0.01 if v.is_floating_point() else v for k, v in weights.items()}, tmp_path / "b.pt")
    runner = Runner(load_pipeline(_write(tmp_path / "p.yaml", doc)), stages, run_dir)
    assert _plan_runs(runner) == ["teacher", "distill"]
    assert _ran(runner.run()) == ["teacher", "distill"]


def test_saved_config_means_what_the_users_file_meant(tmp_path):
    """The run dir's pipeline.yaml keeps inherited settings inherited: reloading it changes no key."""
    doc = yaml.safe_load(yaml.safe_dump(BASE))
    cfg = load_pipeline(_write(tmp_path / "p.yaml", doc))
    saved = load_pipeline(_write(tmp_path / "saved.yaml", yaml.safe_load(saved_config(cfg))))
    assert saved.baseline.model_fields_set == cfg.baseline.model_fields_set
    run_dir = tmp_path / "run"
    for stage in all_stages():
        a = Runner(cfg, [stage], run_dir).plan()[0]
        b = Runner(saved, [stage], run_dir).plan()[0]
        assert (a.action, a.key) == (b.action, b.key), stage.name


class _Leaky:
    """A stage that reads a config value its key does not hash."""

    name = "teacher"
    section = "teacher"
    reads = ("teacher",)
    toolchain = ()
    needs = ()
    uses = ()
    distributed = False

    def skip_reason(self, cfg):
        return None

    def run(self, ctx, cfg, inputs):
        ctx.config.export.parity_batch  # noqa: B018 -- the leak
        return StageResult()


def test_a_read_outside_the_declared_paths_fails_the_stage(tmp_path):
    cfg = load_pipeline(_write(tmp_path / "p.yaml", yaml.safe_load(yaml.safe_dump(BASE))))
    with pytest.raises(RuntimeError, match=r"read export\.parity_batch, which its key does not hash"):
        Runner(cfg, [_Leaky()], tmp_path / "run").run()
