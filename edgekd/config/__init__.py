"""Typed models of pipeline.yaml and devices.yaml, and the YAML loader with its one-line errors.

- :mod:`edgekd.config.pipeline`: the pipeline's sections (pydantic models, ``extra="forbid"``)
- :mod:`edgekd.config.loader`: safe YAML with bounded aliases, validation errors that name the key,
  its line and the nearest valid key, relative paths resolved against the file's folder
- :mod:`edgekd.config.devices`: devices.yaml and its loader

Everything public is re-exported here: ``from edgekd.config import PipelineConfig, load_pipeline``.
"""

from edgekd.config.devices import DEVICE_NAME, DeviceBenchConfig, DeviceConfig, DevicesConfig, load_devices
from edgekd.config.loader import MAX_YAML_ALIASES, MAX_YAML_VALUES, is_weights_file, load_pipeline, parse_pipeline
from edgekd.config.pipeline import (
    AdaptiveSchedule,
    AugmentConfig,
    BaselineConfig,
    BenchmarkConfig,
    BudgetConfig,
    ConstantSchedule,
    CosineSchedule,
    DataConfig,
    DistillConfig,
    DynamicQuantConfig,
    ExportConfig,
    FeaturePair,
    LinearSchedule,
    ModelInputs,
    NonNegFloat,
    OptimConfig,
    Phase,
    PhasedSchedule,
    PipelineConfig,
    PositiveFloat,
    QatConfig,
    Schedule,
    ScheduleOrValue,
    Section,
    StudentConfig,
    SweepConfig,
    TeacherConfig,
    TensorRTConfig,
)

__all__ = [
    "DEVICE_NAME",
    "MAX_YAML_ALIASES",
    "MAX_YAML_VALUES",
    "AdaptiveSchedule",
    "AugmentConfig",
    "BaselineConfig",
    "BenchmarkConfig",
    "BudgetConfig",
    "ConstantSchedule",
    "CosineSchedule",
    "DataConfig",
    "DeviceBenchConfig",
    "DeviceConfig",
    "DevicesConfig",
    "DistillConfig",
    "DynamicQuantConfig",
    "ExportConfig",
    "FeaturePair",
    "LinearSchedule",
    "ModelInputs",
    "NonNegFloat",
    "OptimConfig",
    "Phase",
    "PhasedSchedule",
    "PipelineConfig",
    "PositiveFloat",
    "QatConfig",
    "Schedule",
    "ScheduleOrValue",
    "Section",
    "StudentConfig",
    "SweepConfig",
    "TeacherConfig",
    "TensorRTConfig",
    "is_weights_file",
    "load_devices",
    "load_pipeline",
    "parse_pipeline",
]
