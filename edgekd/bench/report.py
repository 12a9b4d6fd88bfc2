"""The run report: one table per device, accuracy-vs-latency plots, distillation curves, budget and recommendation.

Reads bench/*.json (schema edgekd.bench/1), manifest.json and distill/metrics.jsonl from one
or several run directories; writes report.md, report.html (self-contained, plots embedded
as base64 PNG) and report.json to `out_dir`.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgekd.artifacts import write_bytes_atomic
from edgekd.bench.plots import Point, accuracy_latency_scatter, distillation_curves, pareto_front
from edgekd.config import BudgetConfig
from edgekd.errors import EdgekdError
from edgekd.ondevice.measure import BENCH_SCHEMA

REPORT_SCHEMA = "edgekd.report/1"


@dataclass
class ReportSummary:
    """What build_report wrote and found.

    `failed`: artifacts that failed to load or run; `over_budget`: measured artifacts outside
    the accuracy budget; `unmet`: devices without any student artifact within budget (or
    without a teacher to check against). One line each.
    """

    out_dir: Path
    markdown: Path
    html: Path
    json: Path
    recommendations: dict[str, str | None] = field(default_factory=dict)  # "<run>/<device>" -> artifact name
    failed: list[str] = field(default_factory=list)
    over_budget: list[str] = field(default_factory=list)
    unmet: list[str] = field(default_factory=list)


def meets_budget(report: ReportSummary) -> bool:
    """True when every device has a student artifact within the accuracy budget and no artifact failed."""
    return not report.unmet and not report.failed


# --------------------------------------------------------------------------- reading


def load_bench(path: Path) -> dict[str, Any]:
    """A bench/<device>.json document, checked for its schema."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise EdgekdError(f"{path}: cannot read bench file: {e}") from None
    if not isinstance(doc, dict) or doc.get("schema") != BENCH_SCHEMA:
        found = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise EdgekdError(f"{path}: bench file schema is {found!r}; expected {BENCH_SCHEMA!r}")
    return doc


def load_manifest(run_dir: Path) -> dict[str, Any]:
    """The run's manifest.json, or {} when the directory has none (e.g. bench files brought back from a device)."""
    path = run_dir / "manifest.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise EdgekdError(f"{path}: malformed manifest: {e}") from None


def load_metrics(path: Path) -> list[dict[str, Any]]:
    """Per-epoch records of distill/metrics.jsonl ([] when absent)."""
    if not path.is_file():
        return []
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise EdgekdError(f"{path}:{n}: malformed metrics line: {e.msg}") from None
    return [r for r in rows if "epoch" in r]


# --------------------------------------------------------------------------- analysis


def _p50(artifact: dict, bs: int) -> float | None:
    for rec in artifact.get("latency") or []:
        if rec.get("batch_size") == bs:
            return rec["p50_ms"]
    return None


def _top1(artifact: dict) -> float | None:
    acc = artifact.get("accuracy")
    return acc.get("top1") if artifact.get("status") == "done" and acc else None


def _reference(artifacts: list[dict], model: str) -> dict | None:
    """The fp32 reference of `model`: its PyTorch eager row, else any fp32 row with accuracy."""
    candidates = [a for a in artifacts if a["model"] == model and a["precision"] == "fp32" and _top1(a) is not None]
    candidates.sort(key=lambda a: a["format"] != "pytorch")
    return candidates[0] if candidates else None


def _budget(
    row: dict, teacher_top1: float | None, student_top1: float | None, budget: BudgetConfig
) -> tuple[str | None, str]:
    """('within'|'over'|'n/a'|None, why) for one artifact."""
    top1 = _top1(row)
    if top1 is None:
        return None, ""
    if teacher_top1 is None:
        return "n/a", "no teacher reference"
    notes = []
    drop = teacher_top1 - top1
    if drop > budget.max_drop_vs_teacher + 1e-9:
        notes.append(f"{drop:.2f} pts below teacher (max {budget.max_drop_vs_teacher:g})")
    if row["model"] == "student" and row["precision"] != "fp32" and student_top1 is not None:
        drop_s = student_top1 - top1
        if drop_s > budget.max_drop_vs_student + 1e-9:
            notes.append(f"{drop_s:.2f} pts below fp32 student (max {budget.max_drop_vs_student:g})")
    return ("over" if notes else "within"), "; ".join(notes)


def analyse(
    bench: dict, budget: BudgetConfig, teacher_top1: float | None, student_top1: float | None
) -> dict[str, Any]:
    """Rows with speed-ups, accuracy deltas, budget marks, Pareto flags, and the recommendation for one device."""
    artifacts = bench["artifacts"]
    batch_sizes = list(bench["settings"]["batch_sizes"])
    primary = min(batch_sizes)
    ref = _reference(artifacts, "teacher")
    if ref is not None:
        teacher_top1 = _top1(ref)
    s_ref = _reference(artifacts, "student")
    if s_ref is not None:
        student_top1 = _top1(s_ref)
    rows = []
    for a in artifacts:
        top1 = _top1(a)
        mark, why = _budget(a, teacher_top1, student_top1, budget)
        latency = {}
        for rec in a.get("latency") or []:
            bs = rec["batch_size"]
            ref_p50 = _p50(ref, bs) if ref else None
            latency[str(bs)] = {
                "p50_ms": rec["p50_ms"],
                "p99_ms": rec["p99_ms"],
                "throughput_ips": rec["throughput_ips"],
                "spread": rec.get("spread"),
                "speedup": ref_p50 / rec["p50_ms"] if ref_p50 and rec["p50_ms"] > 0 else None,
            }
        rows.append(
            {
                "name": a["name"],
                "model": a["model"],
                "format": a["format"],
                "precision": a["precision"],
                "source_stage": a.get("source_stage"),
                "status": a["status"],
                "reason": a.get("reason"),
                "runtime": a.get("runtime"),
                "size_bytes": a.get("size_bytes"),
                "params": a.get("params"),
                "macs": a.get("macs"),
                "latency": latency,
                "top1": top1,
                "top1_delta": top1 - teacher_top1 if top1 is not None and teacher_top1 is not None else None,
                "agreement": (a.get("accuracy") or {}).get("agreement"),
                "budget": mark,
                "budget_note": why,
                "reference": a is ref,
                "pareto": False,
            }
        )
    plotted = [r for r in rows if r["top1"] is not None and str(primary) in r["latency"]]
    flags = pareto_front([r["latency"][str(primary)]["p50_ms"] for r in plotted], [r["top1"] for r in plotted])
    for r, flag in zip(plotted, flags):
        r["pareto"] = flag
    eligible = [r for r in plotted if r["budget"] == "within"]
    best = min(eligible, key=lambda r: r["latency"][str(primary)]["p50_ms"]) if eligible else None
    rows.sort(key=lambda r: not r["reference"])
    return {
        "device": bench["device"],
        "settings": bench["settings"],
        "created": bench.get("created"),
        "batch_sizes": batch_sizes,
        "primary_batch": primary,
        "reference": ref["name"] if ref else None,
        "teacher_top1": teacher_top1,
        "student_top1": student_top1,
        "rows": rows,
        "recommendation": best["name"] if best else None,
    }


# --------------------------------------------------------------------------- formatting


def _num(x: float | None, fmt: str = ".2f", suffix: str = "") -> str:
    return "—" if x is None else f"{x:{fmt}}{suffix}"


def _count(x: int | None, unit: float, fmt: str) -> str:
    return "—" if x is None else f"{x / unit:{fmt}}"


def _size(n: int | None) -> str:
    if n is None:
        return "—"
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def _signed(x: float | None) -> str:
    return "—" if x is None else f"{x:+.2f}"


def _table(section: dict) -> tuple[list[str], list[list[str]]]:
    headers = ["Artifact", "Model", "Format", "Precision", "Runtime", "Size", "Params (M)", "MACs (M)"]
    for bs in section["batch_sizes"]:
        headers += [f"b{bs} p50 / p99 (ms)", f"b{bs} img/s", f"b{bs} speed-up"]
    headers += ["Top-1 (%)", "Δ top-1", "Budget", "Notes"]
    rows = []
    for r in section["rows"]:
        rt = r["runtime"]
        runtime = f"{rt.get('name')} {rt.get('version')} ({rt.get('provider')}, {rt.get('threads')} thr)" if rt else "—"
        name = f"{r['name']} (reference)" if r["reference"] else r["name"]
        cells = [name, r["model"], r["format"], r["precision"], runtime]
        cells += [_size(r["size_bytes"]), _count(r["params"], 1e6, ".3f"), _count(r["macs"], 1e6, ".1f")]
        for bs in section["batch_sizes"]:
            lat = r["latency"].get(str(bs))
            if lat:
                cells += [
                    f"{lat['p50_ms']:.2f} / {lat['p99_ms']:.2f}",
                    f"{lat['throughput_ips']:.1f}",
                    _num(lat["speedup"], ".2f", "×"),
                ]
            else:
                cells += ["—", "—", "—"]
        mark = {"within": "✅ within", "over": "❌ over", "n/a": "n/a", None: "—"}[r["budget"]]
        if r["name"] == section["recommendation"]:
            mark += " ⭐"
        if r["status"] != "done":
            note = f"{r['status'].upper()}: {r['reason']}"
        else:
            note = r["budget_note"]
        cells += [_num(r["top1"]), _signed(r["top1_delta"]), mark, note]
        rows.append(cells)
    return headers, rows


def _recommendation_line(label: str, section: dict) -> str:
    name = section["recommendation"]
    if name is None:
        return f"**Recommendation on {label}:** no artifact is within the accuracy budget."
    row = next(r for r in section["rows"] if r["name"] == name)
    lat = row["latency"][str(section["primary_batch"])]
    speed = f", {lat['speedup']:.2f}× the teacher's speed" if lat["speedup"] else ""
    delta = f" ({row['top1_delta']:+.2f} vs teacher)" if row["top1_delta"] is not None else ""
    caveat = (
        " No student artifact is within the budget, so this keeps a teacher model." if row["model"] == "teacher" else ""
    )
    return (
        f"**Recommendation on {label}:** `{name}` — fastest within budget: p50 {lat['p50_ms']:.2f} ms at batch "
        f"{section['primary_batch']}{speed}, top-1 {row['top1']:.2f}%{delta}.{caveat}"
    )


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: list[tuple]) -> str:
    out = []
    for kind, *args in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + args[0])
        elif kind == "p":
            out.append(args[0])
        elif kind == "ul":
            out.append("\n".join(f"- {item}" for item in args[0]))
        elif kind == "table":
            headers, rows = args
            lines = ["| " + " | ".join(map(_md_escape, headers)) + " |", "|" + "---|" * len(headers)]
            lines += ["| " + " | ".join(map(_md_escape, row)) + " |" for row in rows]
            out.append("\n".join(lines))
        elif kind == "img":
            out.append(f"![{args[1]}]({args[0].name})")
    return "\n\n".join(out) + "\n"


def _inline_md(text: str) -> str:
    """Escape for HTML and turn **bold** and `code` spans into tags."""
    escaped = html.escape(text)
    parts = escaped.split("**")
    escaped = "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))
    parts = escaped.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;font-size:13px;margin:1em 0}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
td:last-child{text-align:left;min-width:22em}.scroll{overflow-x:auto}
code{background:#f3f3f3;padding:1px 3px}img{max-width:100%}"""


def render_html(blocks: list[tuple], images: dict[Path, bytes], title: str) -> str:
    out = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
    ]
    for kind, *args in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{html.escape(args[0])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{_inline_md(args[0])}</p>")
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{_inline_md(i)}</li>" for i in args[0]) + "</ul>")
        elif kind == "table":
            headers, rows = args
            head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
            body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
            out.append(f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")
        elif kind == "img":
            data = base64.b64encode(images[args[0]]).decode("ascii")
            out.append(f"<p><img alt='{html.escape(args[1])}' src='data:image/png;base64,{data}'></p>")
    out.append("</body></html>")
    return "\n".join(out)


# --------------------------------------------------------------------------- building


def _run_labels(run_dirs: list[Path]) -> list[str]:
    names = [d.resolve().name for d in run_dirs]
    return names if len(set(names)) == len(names) else [str(d) for d in run_dirs]


def _stage_rows(manifest: dict) -> list[list[str]]:
    rows = []
    for stage, rec in (manifest.get("stages") or {}).items():
        seconds = rec.get("seconds")
        note = rec.get("reason") or rec.get("error") or ""
        rows.append([stage, rec.get("status", "?"), _num(seconds, ".1f", " s"), note])
    return rows


def _distillation_blocks(manifest: dict, heading: str) -> list[tuple]:
    """What distillation bought (against the hard-label baseline) and the sweep's table, when the run has them."""
    stages = manifest.get("stages") or {}
    distill = (stages.get("distill") or {}).get("metrics") or {}
    baseline = stages.get("baseline") or {}
    blocks: list[tuple] = []
    if baseline.get("status") in ("done", "cached") and distill.get("val_top1") is not None:
        base = baseline["metrics"]["val_top1"]
        blocks.append(
            (
                "p",
                f"Distillation bought {distill['val_top1'] - base:+.2f} points of top-1: the distilled student reaches "
                f"{distill['val_top1']:.2f}%, the same student trained on hard labels alone with the same budget {base:.2f}%.",
            )
        )
    elif baseline.get("status") == "skipped":
        blocks.append(
            (
                "p",
                f"No hard-label baseline: {baseline.get('reason')} (set `baseline.enabled: true` to measure what distillation buys).",
            )
        )
    if distill.get("sweep"):
        keys = [k for k in ("temperature", "soft_weight", "hard_weight") if k in distill["sweep"][0]]
        rows = [
            [
                *(f"{r[k]:g}" for k in keys),
                _num(r["val_top1"]),
                _num(r["val_kl"], ".4f"),
                "best" if all(r[k] == distill["sweep_best"][k] for k in keys) else "",
            ]
            for r in distill["sweep"]
        ]
        blocks += [
            ("p", "Sweep over the distillation settings (the best went on to the later stages):"),
            ("table", [*keys, "val top-1", "val KL", ""], rows),
        ]
    return [("h2", heading), *blocks] if blocks else []


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text)


def build_report(run_dirs: list[Path], out_dir: Path, budget: BudgetConfig) -> ReportSummary:
    """Write report.md, report.html, report.json and the PNG figures to `out_dir` for one or several runs.

    Each run dir contributes its bench/*.json (one section per device), its manifest's
    stages (skipped and failed ones with their reason) and its distillation curves.
    """
    run_dirs = [Path(d) for d in run_dirs]
    for d in run_dirs:
        if not d.is_dir():
            raise EdgekdError(f"{d}: run directory not found")
    out_dir = Path(out_dir)
    labels = _run_labels(run_dirs)
    summary = ReportSummary(out_dir, out_dir / "report.md", out_dir / "report.html", out_dir / "report.json")
    title = "edgekd report: " + ", ".join(labels)
    blocks: list[tuple] = [
        ("h1", title),
        (
            "p",
            f"Accuracy budget: at most {budget.max_drop_vs_teacher:g} points top-1 below the "
            f"teacher; quantized students at most {budget.max_drop_vs_student:g} points below the fp32 student.",
        ),
    ]
    images: dict[Path, bytes] = {}
    sections, runs_json, stage_blocks = [], [], []
    curves: dict[str, list[dict]] = {}
    many = len(run_dirs) > 1

    for run_dir, label in zip(run_dirs, labels):
        manifest = load_manifest(run_dir)
        benches = [load_bench(p) for p in sorted((run_dir / "bench").glob("*.json"))]
        metrics = load_metrics(run_dir / "distill" / "metrics.jsonl")
        if metrics:
            curves[label] = metrics
        # Accuracy references shared by the run's devices (a device without a teacher row still gets a budget).
        teacher_top1 = next((_top1(r) for b in benches if (r := _reference(b["artifacts"], "teacher"))), None)
        student_top1 = next((_top1(r) for b in benches if (r := _reference(b["artifacts"], "student"))), None)
        if not benches:
            summary.unmet.append(f"{label}: no bench/*.json in {run_dir}")
        for bench in benches:
            section = analyse(bench, budget, teacher_top1, student_top1)
            section["run"] = label
            sections.append(section)
        runs_json.append(
            {
                "label": label,
                "path": str(run_dir),
                "stages": manifest.get("stages") or {},
                "distill_epochs": len(metrics),
            }
        )
        stage_blocks += _distillation_blocks(
            manifest, f"What distillation bought — {label}" if many else "What distillation bought"
        )
        stage_rows = _stage_rows(manifest)
        if stage_rows:
            stage_blocks += [
                ("h2", f"Stages — {label}" if many else "Stages"),
                ("table", ["Stage", "Status", "Time", "Reason / error"], stage_rows),
            ]

    for section in sections:
        dev = section["device"]
        where = f"{section['run']}/{dev['name']}"
        heading = f"{dev['name']} ({dev.get('kind', '?')})" + (f" — {section['run']}" if many else "")
        gpu = f", GPU {dev['gpu']}" if dev.get("gpu") else ""
        power = f", power mode {dev['power_mode']}" if dev.get("power_mode") else ""
        s = section["settings"]
        blocks += [
            ("h2", f"Device {heading}"),
            (
                "p",
                f"{dev.get('cpu')}, {dev.get('cores')} cores, {dev.get('memory_gb')} GB{gpu}{power}; {dev.get('os')}; Python "
                f"{dev.get('python')}. Timing: {s['warmup']} warm-up runs, at least {s['min_runs']} runs and {s['min_seconds']:g} s per batch "
                f"size, {s['repeats']} rounds, {s['threads']} CPU threads; benchmarked {section['created']}.",
            ),
            ("table", *_table(section)),
            ("p", _recommendation_line(where if many else dev["name"], section)),
        ]
        summary.recommendations[where] = section["recommendation"]
        points = [
            Point(
                r["name"],
                r["latency"][str(section["primary_batch"])]["p50_ms"],
                r["top1"],
                r["pareto"],
                None if r["budget"] == "n/a" else r["budget"] == "within",
            )
            for r in section["rows"]
            if r["top1"] is not None and str(section["primary_batch"]) in r["latency"]
        ]
        if points:
            png = out_dir / f"accuracy-latency-{_slug(where)}.png"
            images[png] = accuracy_latency_scatter(
                points,
                f"{heading}: top-1 vs p50 latency (Pareto front in red)",
                f"p50 latency at batch {section['primary_batch']} (ms, log scale)",
                png,
            )
            blocks.append(("img", png, f"accuracy vs latency on {where}"))
        for r in section["rows"]:
            if r["status"] == "failed":
                summary.failed.append(f"{where}: {r['name']} failed: {r['reason']}")
            if r["budget"] == "over":
                summary.over_budget.append(f"{where}: {r['name']} over budget: {r['budget_note']}")
        if section["teacher_top1"] is None:
            summary.unmet.append(f"{where}: no teacher accuracy to check the budget against")
        elif not any(r["budget"] == "within" and r["model"] == "student" for r in section["rows"]):
            summary.unmet.append(f"{where}: no student artifact within the accuracy budget")

    if len(sections) > 1:
        rows = []
        for section in sections:
            name = section["recommendation"]
            row = next((r for r in section["rows"] if r["name"] == name), None)
            lat = row["latency"][str(section["primary_batch"])] if row else None
            rows.append(
                [
                    section["run"],
                    section["device"]["name"],
                    _num(section["teacher_top1"]),
                    name or "—",
                    _num(lat["p50_ms"] if lat else None),
                    _num(lat["speedup"] if lat else None, ".2f", "×"),
                    _num(row["top1"] if row else None),
                ]
            )
        blocks += [
            ("h2", "Side by side"),
            (
                "table",
                ["Run", "Device", "Teacher top-1", "Recommended", "p50 (ms, smallest batch)", "Speed-up", "Top-1"],
                rows,
            ),
        ]

    blocks += stage_blocks
    if curves:
        png = out_dir / "distillation-curves.png"
        images[png] = distillation_curves(curves, png)
        blocks += [("h2", "Distillation"), ("img", png, "student val top-1 and teacher-student KL per epoch")]

    problems = summary.failed + summary.over_budget + summary.unmet
    verdict = "meets the accuracy budget" if meets_budget(summary) else "does NOT meet the accuracy budget"
    blocks += [("h2", "Verdict"), ("p", f"**This report {verdict}.**")] + ([("ul", problems)] if problems else [])

    write_bytes_atomic(summary.markdown, render_markdown(blocks).encode("utf-8"))
    write_bytes_atomic(summary.html, render_html(blocks, images, title).encode("utf-8"))
    write_bytes_atomic(
        summary.json,
        json.dumps(
            {
                "schema": REPORT_SCHEMA,
                "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "budget": budget.model_dump(),
                "runs": runs_json,
                "sections": sections,
                "recommendations": summary.recommendations,
                "meets_budget": meets_budget(summary),
                "failed": summary.failed,
                "over_budget": summary.over_budget,
                "unmet": summary.unmet,
            },
            indent=2,
        ).encode("utf-8"),
    )
    return summary
