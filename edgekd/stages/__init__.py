"""One module per stage; `all_stages()` gives them in pipeline order."""

from __future__ import annotations

from edgekd.pipeline import Stage


def all_stages() -> list[Stage]:
    from edgekd.stages.distill import DistillStage
    from edgekd.stages.teacher import TeacherStage

    return [TeacherStage(), DistillStage()]
