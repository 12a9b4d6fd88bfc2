"""`report` stage: report.md, report.html and report.json from the run's bench files and manifest."""

from __future__ import annotations

from pathlib import Path

from edgekd.config import BenchmarkConfig, PipelineConfig
from edgekd.ondevice import catalog
from edgekd.ondevice.files import sha256_file
from edgekd.pipeline import RunContext, StageResult
from edgekd.report import write_report
from edgekd.rundir import RunDir


class ReportStage:
    name = "report"
    section = "benchmark"
    reads = ("benchmark.budget", "benchmark.device_name")
    toolchain = ("matplotlib",)
    needs = ("bench",)
    uses = tuple(  # what it quotes: the run's artifacts (not the rows of files given to `edgekd bench`)
        a.id for a in catalog.ARTIFACTS if a.stage != "report" and a.id != "bench" and not catalog.per_file(a.id)
    )
    distributed = False

    def skip_reason(self, cfg: PipelineConfig) -> str | None:
        return None if cfg.benchmark.enabled else "benchmark.enabled is false"

    def environment(self, cfg: PipelineConfig, run_dir: Path) -> dict:
        """The bench files `edgekd ship` brought back from devices (the local one is an input)."""
        run = RunDir(run_dir)
        local = run.bench_file(cfg.benchmark.device_name)
        return {p.name: sha256_file(p) for p in run.bench_files() if p != local}

    def run(self, ctx: RunContext, cfg: BenchmarkConfig, inputs: dict[str, Path]) -> StageResult:
        # The manifest as it stood when this stage started: its own record says "running", so it is left out.
        files = write_report([ctx.run_dir], ctx.out("report_md").parent, cfg.budget, omit_stage=self.name)
        report = files.report
        ctx.reporter.log(f"  report: {ctx.rundir.path('report_html')}")
        return StageResult(
            {"report_md": files.markdown, "report_html": files.html, "report_json": files.json},
            {
                "recommendations": report.recommendations,
                "meets_budget": report.meets_budget,
                "unmet": report.unmet,
                "latency_unmet": report.latency_unmet,
                "over_budget": report.over_budget,
                "failed": report.failed,
                "unstable": report.unstable,
            },
        )
