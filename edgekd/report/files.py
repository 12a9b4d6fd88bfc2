"""The report of `edgekd bench FILE.onnx`: a short Markdown file (the files, then per device every row with its
latency, spread and stability mark, the rows that did not run with their reasons, and what the machine was doing)
and the terminal's table of one device."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from edgekd.bench.onnx_file import OnnxFile
from edgekd.ondevice.files import write_text_atomic
from edgekd.ondevice.records import ArtifactRecord, BenchDoc, Latency
from edgekd.rundir import RunDir

NO_ACCURACY = "Accuracy is not measured: the files are timed on seeded random inputs, which have no labels."


def write_files_report(out: Path, files: Sequence[OnnxFile], docs: Sequence[BenchDoc], calibration: str | None) -> Path:
    """Write the report of `docs` (one per device) into the output folder `out`; returns its path."""
    path = RunDir(out).path("report_md")
    write_text_atomic(path, render(files, docs, calibration))
    return path


def render(files: Sequence[OnnxFile], docs: Sequence[BenchDoc], calibration: str | None) -> str:
    lines = [f"# edgekd bench · {', '.join(f.name for f in files)}", ""]
    lines += ["| file | given as | input | precision | nodes |", "|---|---|---|---|---|"]
    lines += [f"| `{f.name}` | {f.path.name} | {f.describe_shape()} | {f.precision} | {f.nodes} |" for f in files]
    lines += ["", NO_ACCURACY]
    if calibration:
        lines.append(f"int8 (Q/DQ) copies of fp32 files: ONNX Runtime static quantization calibrated on {calibration}.")
    for doc in docs:
        lines += ["", *_device(doc)]
    return "\n".join(lines) + "\n"


def _device(doc: BenchDoc) -> list[str]:
    system = doc.system
    where = ", ".join(str(system[k]) for k in ("cpu", "gpu") if system.get(k)) or doc.kind
    lines = [
        f"## {doc.device} ({where})",
        "",
        "| file | artifact | runtime | batch | p50 ms | p90 ms | spread | img/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    done = [a for a in doc.artifacts if a.status == "done"]
    lines += [_row(a, lat) for a in done for lat in a.latency]
    if not done:
        lines.append("| — | nothing ran | | | | | | |")
    if doc.unstable:
        lines += ["", "† unstable (run again on a quieter machine, or raise repeats and min_seconds):"]
        lines += [f"- {line}" for line in doc.unstable]
    notes = [f"- {a.status.upper()}: `{a.key}`: {a.reason}" for a in doc.artifacts if a.status != "done"]
    notes += [f"- NOTE: `{a.key}`: {a.note}" for a in done if a.note]
    return lines + (["", *notes] if notes else []) + ["", _conditions(doc)]


def _row(a: ArtifactRecord, lat: Latency) -> str:
    runtime = f"{a.runtime.name} {a.runtime.version} ({a.runtime.provider})" if a.runtime else "?"
    mark = "" if lat.stable else " †"
    return (
        f"| `{a.name}` | {a.id} | {runtime} | {lat.batch_size} | {lat.p50_ms:.3f}{mark} | {lat.p90_ms:.3f} | "
        f"{lat.spread:.0%} | {lat.throughput_ips:.0f} |"
    )


def _conditions(doc: BenchDoc) -> str:
    s, c = doc.settings, doc.conditions
    others = [f["others_cores"] for f in c.get("figures", []) if f.get("others_cores") is not None]
    load = [c.get(k, {}).get("loadavg", [None])[0] for k in ("before", "after")]
    parts = [
        f"{s.get('repeats')} interleaved round(s) of at least {s.get('min_runs')} runs after {s.get('warmup')} warm-up",
        f"{s.get('threads')} threads",
        f"1-min load {load[0]} before, {load[1]} after",
    ]
    if others:
        parts.append(f"other processes used up to {max(others):.2f} cores while timing")
    return "Measured under: " + "; ".join(parts) + "."


def files_table(doc: BenchDoc) -> Table:
    """One line per row and batch size of a device's bench: p50 and spread, or why the row did not run."""
    table = Table(title=escape(f"edgekd bench · {doc.device}"))
    for col in ("file", "artifact", "batch", "p50 ms", "spread"):
        table.add_column(col, justify="right" if col in ("batch", "p50 ms", "spread") else "left", no_wrap=True)
    table.add_column("note", overflow="fold", max_width=60)
    for a in doc.artifacts:
        if a.status != "done":
            table.add_row(a.name or "", a.id, "", "", "", escape(f"{a.status}: {a.reason}"))
        for lat in a.latency:
            why = escape(lat.unstable or a.note or "")
            table.add_row(a.name or "", a.id, str(lat.batch_size), f"{lat.p50_ms:.3f}", f"{lat.spread:.0%}", why)
    return table
