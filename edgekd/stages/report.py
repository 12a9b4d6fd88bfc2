"""`report` stage: report.md, report.html and report.json from the run's bench files and manifest."""

from __future__ import annotations

from pathlib import Path

from edgekd.artifacts import sha256_file
from edgekd.config import BenchmarkConfig, PipelineConfig
from edgekd.ondevice import catalog
from edgekd.pipeline import RunContext, StageResult
from edgekd.report import write_report


class ReportStage:
    name = "report"
    section = "benchmark"
    reads = ("benchmark.budget", "benchmark.device_name")
    toolchain = ("matplotlib",)
    needs = ("bench",)
    uses = tuple(a.id for a in catalog.ARTIFACTS if a.stage != "report" and a.id != "bench")  # what it quotes
    distributed = False

    def skip_reason(self, cfg: PipelineConfig) -> str | None:
        return None if cfg.benchmark.enabled else "benchmark.enabled is false"

    def environment(self, cfg: PipelineConfig, run_dir: Path) -> dict:
        """The bench files `edgekd ship` brought back from devices (the local one is an input)."""
        local = f"{cfg.benchmark.device_name}.json"
        return {p.name: sha256_file(p) for p in sorted((run_dir / "bench").glob("*.json")) if p.name != local}

    def run(self, ctx: RunContext, cfg: BenchmarkConfig, inputs: dict[str, Path]) -> StageResult:
        # The manifest as it stood when this stage started: its own record says "running", so it is left out.
        files = write_report([ctx.run_dir], ctx.stage_dir, cfg.budget, omit_stage=self.name)
        report = files.report
        ctx.reporter.log(f"  report: {files.html}")
        return StageResult(
            {"report_md": files.markdown, "report_html": files.html, "report_json": files.json},
            {
                "recommendations": report.recommendations,
                "meets_budget": report.meets_budget,
                "unmet": report.unmet,
                "over_budget": report.over_budget,
                "failed": report.failed,
                "unstable": report.unstable,
            },
        )


def unstable_message(unstable: list[str], run_dir: Path, local: str, repeated: bool = False) -> str | None:
    """One line naming the unstable figures ("<device>: <id> batch <n>: <why>") and how to re-measure them.

    `local` is this machine's device name (benchmark.device_name): other devices are re-measured by
    benchmarking on them again. None when there are no unstable figures.
    """
    if not unstable:
        return None
    named = f"{len(unstable)} unstable figure{'s' if len(unstable) > 1 else ''} ({'; '.join(unstable)})"
    fix = f"`edgekd bench {run_dir} --repeat-unstable`"
    remote = sorted({u.split(":", 1)[0] for u in unstable} - {local})
    if remote:
        fix += f" ({', '.join(remote)}: `edgekd bench {run_dir} --device NAME`)"
    if repeated:
        return f"{named} after re-measuring: stop other busy programs (on a Jetson lock the clocks) and run {fix} again"
    return f"{named}; re-measure them with {fix}"


def strict_failures(metrics: dict, run_dir: Path, local: str) -> list[str]:
    """Why `edgekd run --strict` fails, one line each, from the report stage's metrics ([]: it passes).

    It fails when no deployable artifact meets the accuracy budget (or an artifact failed, or the
    report did not run) and when any figure is marked unstable.
    """
    problems = []
    if not metrics.get("meets_budget"):
        why = "; ".join(metrics.get("unmet", []) + metrics.get("failed", [])) or "the report stage did not run"
        problems.append(f"no deployable artifact meets the accuracy budget ({why})")
    unstable = unstable_message(metrics.get("unstable") or [], run_dir, local)
    return problems + ([unstable] if unstable else [])
