"""`report` stage: report.md, report.html and report.json from the run's bench files and manifest."""

from __future__ import annotations

from pathlib import Path

from edgekd.bench.report import build_report, meets_budget
from edgekd.config import BenchmarkConfig, PipelineConfig
from edgekd.pipeline import RunContext, StageResult


class ReportStage:
    name = "report"
    section = "benchmark"
    sections = ("benchmark",)
    needs = ("bench",)
    uses = ("distill_metrics", "teacher", "student", "baseline_student")  # what the report quotes besides the bench
    makes = ("report_md", "report_html", "report_json")
    distributed = False

    def skip_reason(self, cfg: PipelineConfig) -> str | None:
        return None if cfg.benchmark.enabled else "benchmark.enabled is false"

    def key_extras(self, cfg: PipelineConfig) -> dict:
        return {}

    def run(self, ctx: RunContext, cfg: BenchmarkConfig, inputs: dict[str, Path]) -> StageResult:
        summary = build_report([ctx.run_dir], ctx.stage_dir, cfg.budget)
        ctx.reporter.log(f"  report: {summary.html}")
        return StageResult(
            {"report_md": summary.markdown, "report_html": summary.html, "report_json": summary.json},
            {
                "recommendations": summary.recommendations,
                "meets_budget": meets_budget(summary),
                "unmet": summary.unmet,
                "over_budget": summary.over_budget,
                "failed": summary.failed,
            },
        )
