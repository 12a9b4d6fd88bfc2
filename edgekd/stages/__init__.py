"""One module per stage; `all_stages()` gives them in pipeline order."""

from __future__ import annotations

from edgekd.pipeline import Stage


def all_stages() -> list[Stage]:
    from edgekd.stages.baseline import BaselineStage
    from edgekd.stages.benchmark import BenchmarkStage
    from edgekd.stages.distill import DistillStage
    from edgekd.stages.dynamic_quant import DynamicQuantStage
    from edgekd.stages.export import ExportStage
    from edgekd.stages.prune import PruneStage
    from edgekd.stages.qat import QatStage
    from edgekd.stages.report import ReportStage
    from edgekd.stages.scout import ScoutStage
    from edgekd.stages.teacher import TeacherStage
    from edgekd.stages.tensorrt import TensorRTStage

    return [
        TeacherStage(),
        ScoutStage(),
        PruneStage(),
        DistillStage(),
        BaselineStage(),
        QatStage(),
        DynamicQuantStage(),
        ExportStage(),
        TensorRTStage(),
        BenchmarkStage(),
        ReportStage(),
    ]
