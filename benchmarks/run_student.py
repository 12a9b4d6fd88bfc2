"""The command line the int8 benchmarks share: a pipeline file (and --run-dir) naming a finished run."""

from __future__ import annotations

import argparse
from pathlib import Path

from torch import nn

from edgekd.config import PipelineConfig, load_pipeline
from edgekd.data.datasets import DataBundle, load_data
from edgekd.models import ModelSpec, load_model


def run_student(description: str) -> tuple[PipelineConfig, nn.Module, ModelSpec, DataBundle]:
    """Parse `pipeline [--run-dir DIR]`; return the config, the run's distilled student, its spec and the data."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("pipeline", type=Path)
    p.add_argument("--run-dir", type=Path)
    args = p.parse_args()
    cfg = load_pipeline(args.pipeline)
    run_dir = args.run_dir or cfg.run_dir or Path("runs") / cfg.name
    student, spec = load_model(run_dir / "distill" / "student.pt")
    return cfg, student, spec, load_data(cfg.data, cfg.seed)
