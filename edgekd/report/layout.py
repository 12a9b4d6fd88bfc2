"""The report's document, in order, as blocks both renderers format: summary first, then detail by device.

A block is a tuple: ("h1"|"h2"|"h3", text), ("p", text), ("ul", [text]), ("table", headers, rows, css class),
("img", figure name, alt text, caption). Text may hold **bold** and `code` spans.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgekd.report import text as t
from edgekd.report.model import RETIMED, DeviceSection, KdGain, PruneCheck, Report, Row, RunSection, ScoutCheck
from edgekd.report.text import Cell, Mark
from edgekd.run_records import PruneStep, ScoutTable, not_faster

Block = tuple


@dataclass
class FigureFile:
    """A rendered figure: its file, its PNG bytes and the point labels it had to leave out."""

    path: Path
    png: bytes
    dropped: list[str]


def scatter_name(section: DeviceSection) -> str:
    return f"accuracy-latency-{_slug(section.key)}"


def energy_name(section: DeviceSection) -> str:
    return f"accuracy-energy-{_slug(section.key)}"


def sensitivity_name(run: RunSection) -> str:
    return f"sensitivity-{_slug(run.label)}"


CURVES = "distillation-curves"


def scout_name(run: RunSection, device: str) -> str:
    return f"scout-{_slug(run.label)}-{_slug(device)}"


def sweep_name(run: RunSection) -> str:
    return f"sweep-{_slug(run.label)}"


def sweep_setting(run: RunSection) -> str | None:
    """The setting the sweep figure plots the score against: the most important one, else the first searched."""
    if run.sweep_importance:
        return max(run.sweep_importance, key=lambda k: run.sweep_importance[k])
    return next(iter(run.sweep[0].settings), None) if run.sweep else None


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text)


def _budget_mark(row: Row) -> t.Cell:
    if row.latency_only:
        return "latency only"
    if row.budget == "within":
        return Mark("within", "within, recommended" if row.recommended else "within")
    if row.budget == "over":
        return Mark("over", "over")
    return row.budget or t.DASH


def _latency_mark(row: Row) -> t.Cell:
    """The latency budget's mark: deployable rows only (the others do not ship to this device)."""
    if row.latency_budget in ("within", "over"):
        return Mark(row.latency_budget, row.latency_budget)
    return row.latency_budget or t.DASH


def _verdict(report: Report) -> str:
    budgets = "the accuracy and latency budgets" if report.budget["latency_ms"] else "the accuracy budget"
    return f"{'meets' if report.meets_budget else 'does NOT meet'} {budgets}"


def _latency_budgets(report: Report) -> str:
    """The summary's sentence on latency budgets ("" when none is set)."""
    b = report.budget
    if not b["latency_ms"]:
        return ""
    each = ", ".join(f"{ms:g} ms on {device}" for device, ms in b["latency_ms"].items())
    return (
        f" Latency budget: p50 at batch {b['latency_batch']} at most {each}, judged on the artifacts that ship "
        "there (the student engines where any ran, else its ONNX Runtime files); the recommendation compares "
        "latencies at that batch size there."
    )


def _latency_cell(row: Row, batch: int) -> t.Cell:
    fig = row.at(batch)
    if fig is None:
        return t.DASH
    cell = f"{fig.p50_ms:.2f} / {fig.p99_ms:.2f}"
    return cell if fig.stable else Mark("unstable", f"{cell} {t.UNSTABLE}")


def summary_blocks(report: Report) -> list[Block]:
    """What a reader needs first: the reference, the verdict, the recommendation per device, skipped stages."""
    b = report.budget
    blocks: list[Block] = [
        ("h1", report.title),
        (
            "p",
            f"Speed-ups and accuracy costs are against **`{report.reference}`** ({report.reference_label}), "
            f"measured on each device at its smallest batch size. Accuracy budget: at most "
            f"{b['max_drop_vs_teacher']:g} points top-1 below the teacher; quantized students at most "
            f"{b['max_drop_vs_student']:g} points below the fp32 student." + _latency_budgets(report),
        ),
        ("p", f"**This report {_verdict(report)}.**"),
    ]
    rows = []
    for s in report.summary:
        p50 = t.num(s.p50_ms) + ("" if s.stable else f" {t.UNSTABLE}")
        p50 += f" (budget {s.latency_limit.ms:g})" if s.latency_limit else ""
        rows.append(
            [
                Mark("unstable", f"{s.key} {t.UNSTABLE}") if s.unstable else s.key,
                s.recommended or ("none meets both budgets" if s.latency_limit else "none within budget"),
                p50 if s.p50_ms is None else Mark("unstable", p50) if not s.stable else p50,
                t.speedup(s.speedup),
                t.num(s.top1),
                t.signed(None if s.cost is None else -s.cost),
            ]
        )
    ref = report.reference
    blocks.append(
        (
            "table",
            ["Device", "Recommended", "p50 (ms)", f"Speed-up vs {ref}", "Top-1 (%)", "Top-1 vs ref (pts)"],
            rows,
            "summary",
        )
    )
    notes = [f"{s.key}: {s.note}" for s in report.summary if s.note]
    keyed = {s.key for s in report.summary}  # the others: budgets on devices without a bench file
    notes += [u for u in report.latency_unmet if u.split(": ", 1)[0] not in keyed]
    if notes:
        blocks.append(("ul", notes))
    blocks += unstable_blocks(report)
    if report.skipped:
        blocks += [("p", "**Skipped stages:**"), ("ul", report.skipped)]
    else:
        blocks.append(("p", "No stage was skipped."))
    return blocks


def unstable_blocks(report: Report, most: int = 4) -> list[Block]:
    """The summary's warning when figures are unstable: how many, the first few, and how to re-measure them."""
    if not report.unstable:
        return []
    n = len(report.unstable)
    listed = report.unstable[:most]
    if n > most:
        listed.append(f"and {n - most} more (marked {t.UNSTABLE} in the device tables)")
    run_dir = report.runs[0].path if len(report.runs) == 1 else "RUN_DIR"
    how = f"`edgekd bench {run_dir} --repeat-unstable`"
    shaky = [d.device for d in report.devices if any(not f.stable for r in d.rows for f in r.latency)]
    devices = sorted({d.device for d in report.devices if d.kind != "host" and d.device in shaky})
    if devices:  # device figures are re-measured on the device
        how += f" (on {', '.join(devices)}: `edgekd bench {run_dir} --device NAME`)"
    return [
        (
            "p",
            f"**{t.UNSTABLE} {n} unstable figure{'s' if n > 1 else ''}**: rounds disagreed or the machine was busy, "
            f"so these latencies (and speed-ups) may be wrong. Re-measure them with {how}; "
            "`edgekd run --strict` fails while any remains.",
        ),
        ("ul", listed),
    ]


def side_by_side(report: Report) -> list[Block]:
    """One row per artifact id across all devices: p50 at each device's smallest batch and the speed-up."""
    if len(report.devices) < 2:
        return []
    ids = []
    for d in report.devices:
        ids += [r.id for r in d.rows if r.id not in ids]
    rows = []
    for art_id in ids:
        cells: list[t.Cell] = [art_id]
        for d in report.devices:
            r = d.row(art_id)
            fig = r.at(d.primary_batch) if r else None
            if fig is not None:
                cells.append(
                    f"{fig.p50_ms:.2f} ms ({t.speedup(fig.speedup)})" + ("" if fig.stable else f" {t.UNSTABLE}")
                )
            else:
                cells.append(r.status if r else "not benchmarked")
        rows.append(cells)
    return [
        ("h2", "Side by side"),
        ("p", f"p50 at each device's smallest batch size, and the speed-up against `{report.reference}` there."),
        ("table", ["Artifact", *(d.key for d in report.devices)], rows, "detail"),
    ]


def _energy(value: float | None, watts: bool = False) -> str:
    """Watts with two decimals, mJ with three significant digits (no exponent); "n/a", never 0, without rails."""
    if value is None:
        return "n/a"
    if watts:
        return f"{value:.2f}"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.3g}"


def device_blocks(section: DeviceSection, report: Report, figures: dict[str, FigureFile], many: bool) -> list[Block]:
    heading = f"{section.device} ({section.kind})" + (f" — {section.run}" if many else "")
    about = f"{section.machine}. Timing: {section.timing}; benchmarked {section.created}."
    blocks: list[Block] = [
        ("h2", f"Device {heading}"),
        ("p", about),
        ("p", f"Measured under: {section.measured_under}."),
    ]
    if section.reference_note:
        blocks.append(("p", f"**Reference missing:** {section.reference_note}."))
    blocks.append(
        (
            "p",
            f"Accuracy reference (budget, Δ top-1): {t.num(section.teacher_top1)}% top-1, {section.teacher_top1_from}.",
        )
    )
    headers = ["Artifact", "Runtime", "Threads"]
    compute = any(f.gpu_compute_ms is not None for r in section.rows for f in r.latency)
    for bs in section.batch_sizes:
        headers += [f"b{bs} p50 / p99 (ms)", f"b{bs} speed-up", f"b{bs} W", f"b{bs} mJ/img"]
        headers += [f"b{bs} GPU compute (ms)"] if compute else []
    lat_rows = []
    for r in section.rows:
        cells: list[t.Cell] = [
            r.id + (" (reference)" if r.reference else " (latency only)" if r.latency_only else ""),
            r.runtime or t.DASH,
            t.threads(r.threads),
        ]
        for bs in section.batch_sizes:
            fig = r.at(bs)
            cells += [_latency_cell(r, bs), t.speedup(fig.speedup if fig else None)]
            cells += [_energy(fig.power_w, watts=True), _energy(fig.energy_mj)] if fig else [t.DASH, t.DASH]
            if compute:
                cells.append(t.num(fig.gpu_compute_ms) if fig and fig.gpu_compute_ms is not None else t.DASH)
        lat_rows.append(cells)
    blocks += [("h3", "Latency and energy"), ("table", headers, lat_rows, "detail")]
    if section.clocks_note:
        blocks.append(("p", f"**{section.clocks_note[0].upper()}{section.clocks_note[1:]}.**"))
    versions = sorted({r.runtime_version for r in section.rows if r.runtime_version})
    rails = "; n/a: no power rails were read on this device" if any("n/a" in row for row in lat_rows) else ""
    blocks.append(
        (
            "p",
            (f"Runtimes: {', '.join(versions)}. " if versions else "")
            + "Latency: host wall clock from the input on the host to the output on the host, for every runtime"
            + (
                "; GPU compute: TensorRT's median GPU time of the enqueue alone (as trtexec reports it). "
                if compute
                else ". "
            )
            + "W: mean board power during the artifact's timed rounds; mJ/img: W x mean latency / batch size"
            + f"{rails}. Throughput (img/s) is in report.json.",
        )
    )
    unstable = [f"{r.id} b{f.batch_size}: {f.unstable}" for r in section.rows for f in r.latency if not f.stable]
    if unstable:
        blocks += [
            ("p", f"**{t.UNSTABLE} unstable figures** (rounds disagreed or the machine was busy):"),
            ("ul", unstable),
        ]
    acc_rows = [
        [
            r.id,
            r.precision,
            t.size(r.size_bytes),
            t.count(r.params, 1e6, ".3f"),
            t.count(r.macs, 1e6, ".1f"),
            t.num(r.top1),
            t.signed(r.top1_delta),
            t.num(r.agreement),
            t.num(r.kl, ".4f"),
            _budget_mark(r),
            *([_latency_mark(r)] if section.latency_limit else []),
        ]
        for r in section.rows
    ]
    acc_headers = [
        "Artifact",
        "Precision",
        "Size",
        "Params (M)",
        "MACs (M)",
        "Top-1 (%)",
        "Δ top-1",
        "Agree (%)",
        "KL",
        "Budget",
        *(
            [f"Latency ≤ {section.latency_limit.ms:g} ms (b{section.latency_limit.batch_size})"]
            if section.latency_limit
            else []
        ),
    ]
    blocks += [("h3", "Accuracy and size"), ("table", acc_headers, acc_rows, "detail")]
    if section.latency_limit:
        shipped = ", ".join(f"`{r.id}`" for r in section.rows if r.deployable) or "none was benchmarked"
        blocks.append(
            (
                "p",
                f"Latency budget on {section.device}: {section.latency_limit}, judged on the artifacts that ship "
                f"there ({shipped}); {t.DASH}: does not ship to {section.device}.",
            )
        )
    per_batch = [
        f"`{r.id}`: "
        + ", ".join(f"b{bs} {t.num(top1)}%" for bs, top1 in sorted(r.top1_by_batch.items()))
        + (f"; the table's figure is at batch {r.top1_batch}" if r.top1_batch else "")
        for r in section.rows
        if r.top1_by_batch
    ]
    if per_batch:
        blocks.append(
            (
                "p",
                "Dynamic int8 top-1 by the batch its activation scales are computed over (the validation set run "
                "in chunks of that size):",
            )
        )
        blocks.append(("ul", per_batch))
    blocks.append(("p", _recommendation(section, report.reference)))
    notes = [f"{r.status.upper()}: `{r.id}`: {r.reason}" for r in section.rows if r.status != "done"]
    notes += [
        f"LATENCY ONLY: `{r.id}`: the scout's choice with the weights it was timed with, timed in these rounds "
        "beside the trained student for the Scout section's check; no accuracy, never judged against the budgets "
        "or recommended"
        for r in section.rows
        if r.latency_only and r.status == "done"
    ]
    notes += [f"NOTE: `{r.id}`: {r.note}" for r in section.rows if r.note]
    notes += [f"over budget: `{r.id}`: {r.budget_note}" for r in section.rows if r.budget == "over"]
    notes += [
        f"over the latency budget: `{r.id}`: {r.latency_budget_note}"
        for r in section.rows
        if r.latency_budget == "over"
    ]
    notes += [section.int8_note[0].upper() + section.int8_note[1:]] if section.int8_note else []
    if notes:
        blocks.append(("ul", notes))
    for name, alt in ((scatter_name(section), "latency"), (energy_name(section), "energy per image")):
        fig = figures.get(name)
        if fig is not None:
            caption = f"Labels left out where points crowd: {', '.join(fig.dropped)}." if fig.dropped else ""
            blocks.append(("img", name, f"accuracy vs {alt} on {section.key}", caption))
    return blocks


def _recommendation(section: DeviceSection, reference: str) -> str:
    row = section.row(section.recommendation) if section.recommendation else None
    if row is None:
        return f"**Recommendation on {section.device}:** {section.recommendation_note}."
    fig = row.at(section.ranked_batch)
    speed = f", {t.speedup(fig.speedup)} the speed of `{reference}`" if fig and fig.speedup else ""
    delta = f" ({row.top1_delta:+.2f} vs teacher)" if row.top1_delta is not None else ""
    caveat = f" Note: {section.recommendation_note}." if section.recommendation_note else ""
    within = "both budgets" if section.latency_limit else "budget"
    fastest = f"as fast as {', '.join(f'`{i}`' for i in section.tied)}" if section.tied else "fastest"
    return (
        f"**Recommendation on {section.device}:** `{row.id}` ({row.label}), {fastest} within {within}: p50 "
        f"{t.num(fig.p50_ms if fig else None)} ms at batch {section.ranked_batch}{speed}, top-1 {t.num(row.top1)}%{delta}.{caveat}"
    )


def kd_test(kd: KdGain) -> str:
    """The image-by-image comparison behind what distillation bought, where both stages recorded it."""
    if kd.images is None or kd.gained is None or kd.lost is None or kd.p_value is None:
        return ""
    if kd.gained + kd.lost == 0:
        return f" Image by image they get the same {kd.images} validation images right: nothing separates them."
    if kd.p_value < 0.05:
        better = "distillation" if kd.gained > kd.lost else "the baseline"
        verdict = f"{better} is better beyond what chance explains"
    else:
        verdict = "chance alone splits images this way often, so this run shows no difference"
    return (
        f" Image by image, of {kd.images} validation images the distilled student alone gets {kd.gained} right and "
        f"the baseline alone {kd.lost}: {verdict} (exact McNemar test, p = {kd.p_value:.2g})."
    )


def run_blocks(run: RunSection, figures: dict[str, FigureFile], many: bool) -> list[Block]:
    suffix = f" — {run.label}" if many else ""
    blocks: list[Block] = []
    kd: list[Block] = []
    if run.kd is not None:
        kd.append(
            (
                "p",
                f"Distillation bought **{run.kd.gain:+.2f} points** of top-1: the distilled student reaches "
                f"{run.kd.distilled_top1:.2f}%, the same student trained on hard labels alone with the same budget "
                f"{run.kd.baseline_top1:.2f}%.{kd_test(run.kd)}",
            )
        )
    elif run.kd_note:
        kd.append(
            (
                "p",
                f"{run.kd_note[0].upper()}{run.kd_note[1:]} (set `baseline.enabled: true` to measure what distillation buys).",
            )
        )
    if run.sweep:
        keys = list(run.sweep[0].settings)
        rows = [
            [
                str(s.number),
                *(f"{s.settings.get(k, 0):.4g}" for k in keys),
                s.state,
                t.num(s.selection_top1),
                t.num(s.val_kl, ".4f"),
                t.num(s.val_top1),
                "best" if s.best else "",
            ]
            for s in run.sweep
        ]
        kd += [
            (
                "p",
                "Sweep over the distillation settings (the best went on to the later stages). The winner: "
                + (run.sweep_chosen_by or "the best selection top-1.")
                + " Validation top-1 of the other trials is shown for the record, not used to choose.",
            ),
            ("table", ["trial", *keys, "state", "selection top-1", "selection KL", "val top-1", ""], rows, "detail"),
        ]
        if run.sweep_importance:
            shares = ", ".join(f"{k} {v:.0%}" for k, v in run.sweep_importance.items())
            kd.append(("p", f"Share of the selection score's variance by setting (Optuna's fANOVA): {shares}."))
        if sweep_name(run) in figures:
            kd.append(("img", sweep_name(run), f"selection top-1 against {sweep_setting(run)}", ""))
    if kd:
        blocks += [("h2", "What distillation bought" + suffix), *kd]
    blocks += scout_blocks(run, figures, suffix)
    blocks += pruning_blocks(run, suffix)
    sens = run.sensitivity
    if sens:
        rows = [
            [
                s.layer,
                t.num(s.top1),
                t.num(s.top1 - sens.int8_top1 if sens.int8_top1 is not None else None, "+.2f"),
                t.num(s.kl, ".4f"),
            ]
            for s in sens.layers
        ]
        images = f"{sens.images} training images" if sens.images else "training images"
        scores = ", ".join(
            f"{what} {t.num(v)}%"
            for what, v in (("fp32", sens.fp32_top1), ("all int8", sens.int8_top1))
            if v is not None
        )
        intro = (
            f"Top-1 on {images} (never the validation split) with one layer alone left float, every other "
            f"layer int8{f' ({scores})' if scores else ''}; most sensitive first."
        )
        blocks += [("h2", "Quantization sensitivity" + suffix), ("p", intro)]
        if sens.kept:
            blocks.append(("p", "Kept float by qat.auto_keep_float: " + ", ".join(sens.kept) + "."))
        blocks.append(("table", ["Layer", "Top-1 (%)", "Gain (points)", "KL"], rows, "detail"))
        if sensitivity_name(run) in figures:
            blocks.append(("img", sensitivity_name(run), "per-layer quantization sensitivity", ""))
    if run.stages:
        rows = [[s.name, s.status, t.num(s.seconds, ".1f", " s"), s.note] for s in run.stages]
        blocks += [("h2", "Stages" + suffix), ("table", ["Stage", "Status", "Time", "Reason / error"], rows, "stages")]
    return blocks


def scout_blocks(run: RunSection, figures: dict[str, FigureFile], suffix: str) -> list[Block]:
    """Why the scout chose the student (`student.model: auto`): every candidate of each scouted device, which fit
    the budget, the brief distillation of the top k, and the chosen student's scout latency beside its benchmark."""
    choice = run.scout
    if choice is None:
        return []
    blocks: list[Block] = [
        ("h2", "Scout" + suffix),
        (
            "p",
            f"The student was chosen by the scout (`student.model: auto`) on **{choice.device}**, within its latency "
            f"budget of {choice.budget_ms:g} ms: **{choice.why}**. Each candidate was built at the pipeline's input "
            "with random weights, exported to ONNX and timed before any training, in interleaved rounds.",
        ),
    ]
    if choice.trials:
        rows = [[trial.candidate, str(trial.epochs), t.num(trial.selection_top1)] for trial in choice.trials]
        blocks += [
            (
                "p",
                "The largest candidates within the budget, each distilled briefly and scored on training images "
                "held out from that training (never the validation split):",
            ),
            ("table", ["Candidate", "Epochs", "Selection top-1 (%)"], rows, "detail"),
        ]
    for table in choice.tables:
        rows = _scout_rows(table, choice.chosen if table.device == choice.device else None)
        budget = f"budget {table.budget_ms:g} ms" if table.budget_ms is not None else "no latency budget"
        blocks += [
            ("h3", f"Candidates on {table.device}"),
            (
                "p",
                f"{table.runtime} {table.precision}, p50 at batch {table.batch_size}, {budget}; spread: how far the "
                "medians of the timing rounds differ.",
            ),
            ("table", ["Candidate", "p50 (ms)", "Spread", "Params (M)", "MACs (M)", "Budget", "Note"], rows, "detail"),
        ]
        if scout_name(run, table.device) in figures:
            blocks.append(
                ("img", scout_name(run, table.device), f"scout candidates on {table.device}: MACs vs latency", "")
            )
    if run.scout_check is not None:
        blocks.append(("p", _scout_check(run.scout_check, choice.chosen)))
    return blocks


def _scout_check(check: ScoutCheck, chosen: str) -> str:
    """The scout's figure of its choice, that file re-timed in the benchmark's rounds (on `local`) and the trained
    student's figure, what agrees, and how the machine's speed moved in between."""
    b = check.batch_size
    cached = ", cached from an earlier scout" if check.scout_cached else ""
    scout = (
        f"the scout timed `{chosen}` at {check.scout_ms:.3f} ms (spread {check.scout_spread:.0%}, random weights"
        f"{cached})"
    )
    trained = f"the trained student's `{check.artifact}` at {check.bench_ms:.3f} ms (spread {check.bench_spread:.0%})"
    unstable = (
        ""
        if check.stable
        else f" ({t.UNSTABLE} a figure is marked unstable: re-measure on a quiet machine before trusting either)"
    )
    head = f"**Scout vs benchmark on {check.device}:** "
    if check.retimed_ms is None:
        verdict = ("they agree within" if check.agree else "they differ by more than") + " the spread of their rounds"
        return (
            f"{head}{scout}; the benchmark timed {trained}, both p50 at batch {b}: {verdict}{unstable}. The scout's "
            f"file was not re-timed ({check.not_retimed}), so the two figures are from different moments and any "
            "drift of the machine between them is in the comparison."
        )
    verdict = "the scout's file and the trained student " + (
        "agree within the spread of their rounds: training did not change the latency"
        if check.agree
        else "differ by more than the spread of their rounds, timed at one moment on one machine: the trained "
        "weights ran at another speed"
    )
    drift = check.drift or 0.0
    if check.steady:
        moved = f"ran as fast as when the scout timed it ({drift:+.0%}, within the spread of their rounds)"
    else:
        moved = (
            f"ran {abs(drift):.0%} {'slower' if drift > 0 else 'faster'} in the benchmark than when the scout timed "
            "it: the machine, not the weights"
        )
    return (
        f"{head}{scout}. The benchmark timed that same file (`{RETIMED}`) at {check.retimed_ms:.3f} ms (spread "
        f"{check.retimed_spread or 0.0:.0%}) and {trained} in the same interleaved rounds, all p50 at batch {b}: "
        f"{verdict}{unstable}. The same file {moved}."
    )


def _scout_rows(table: ScoutTable, chosen: str | None) -> list[list[t.Cell]]:
    """The scout's candidates on one device, fastest first, then those not timed and why."""
    front = set(table.pareto())
    rows = []
    for e in table.timed() + [e for e in table.entries if e.status != "done"]:
        lat = e.latency
        notes = [
            "chosen" if e.candidate == chosen else "",
            "Pareto front" if e.candidate in front else "",
            f"{e.status}: {e.reason}" if e.status != "done" else "",
            f"{t.UNSTABLE} {lat.unstable}" if lat is not None and lat.unstable else "",
        ]
        fits = table.mark(e)
        rows.append(
            [
                e.candidate,
                t.num(e.p50_ms, ".3f"),
                f"{lat.spread:.0%}" if lat is not None else t.DASH,
                t.count(e.params, 1e6, ".3f"),
                t.count(e.macs, 1e6, ".1f"),
                t.DASH if fits is None else Mark(fits, fits),
                "; ".join(n for n in notes if n),
            ]
        )
    return rows


def pruning_blocks(run: RunSection, suffix: str) -> list[Block]:
    """The prune stage's steps: size, measured batch-1 latency and where and as what it was taken, top-1 after
    recovery; and where the MACs fell but the latency did not."""
    steps = run.pruning
    if not steps:
        return []
    rows = [
        [
            "teacher" if s.step == 0 else str(s.step),
            t.num(s.channel_share, ".3f") if s.step else "",
            f"{s.macs / 1e6:.2f} M ({s.macs_share:.2f})",
            f"{s.params / 1e3:.1f} k ({s.params_share:.2f})",
            _step_latency(s),
            t.num(s.of_teacher, ".2f", "×"),
            s.timed_on or t.DASH,
            t.num(s.val_top1),
            ("met" if s.met_target else "") if s.step else "",
        ]
        for s in steps
    ]
    devices = sorted({s.device for s in steps if s.device})
    where = " and ".join(devices) if devices != ["local"] and devices else "this machine"
    blocks: list[Block] = [
        ("h2", "Pruning" + suffix),
        (
            "p",
            "The student is the teacher with whole channels removed (Torch-Pruning), step by step; each step's "
            f"candidate was exported to ONNX and timed at batch 1 on {where} (on a device: its fastest engine, else "
            "ONNX Runtime; `Timed on` names what ran it) in the same interleaved rounds as the unpruned teacher's "
            "file (`Of teacher`: a share that the machine's drift between steps does not move), then recovered by "
            "distillation from the unpruned teacher (top-1 after that recovery; the distill stage then trained it "
            "further). The hard-label baseline, when enabled, is the same pruned architecture trained from scratch.",
        ),
        (
            "table",
            [
                "Step",
                "Channel share cut",
                "MACs (of teacher)",
                "Params (of teacher)",
                "p50 b=1 (ms)",
                "Of teacher",
                "Timed on",
                "Top-1 (%)",
                "Target",
            ],
            rows,
            "detail",
        ),
    ]
    if any((s.runtime or "").startswith("tensorrt-standin") for s in steps):
        blocks.append(
            (
                "p",
                "**These latencies came from the tests' TensorRT stand-in (`tensorrt-standin`, engines run on ONNX "
                "Runtime):** they prove the flow, not TensorRT's speed.",
            )
        )
    for prev, s in not_faster(steps):
        if prev.of_teacher is not None and s.of_teacher is not None:
            moved = f"{prev.of_teacher:.2f}× → {s.of_teacher:.2f}× the teacher's, each timed in the same rounds"
        else:
            moved = f"{prev.latency_ms:.3f} → {s.latency_ms:.3f} ms"
        blocks.append(
            (
                "p",
                f"**Step {s.step}: the MACs fell by {1 - s.macs / prev.macs:.0%} but the latency did not** "
                f"({moved}): fewer MACs are not a faster model on this runtime; judge by measured latency.",
            )
        )
    if run.prune_check is not None:
        blocks.append(("p", _prune_check(run.prune_check)))
    return blocks


def _step_latency(s: PruneStep) -> Cell:
    cell = t.num(s.latency_ms, ".3f")
    return Mark("unstable", f"{cell} {t.UNSTABLE} {s.unstable}") if s.unstable else cell


def _judged(check: PruneCheck) -> str:
    if check.judged_ms is None:
        return f"{check.step_ms:.3f} ms"
    return f"{check.judged_ms:.3f} ms at step 0's speed, {check.step_ms:.3f} ms as timed"


def _prune_check(check: PruneCheck) -> str:
    """The latency target against the benchmark's figure of the trained student, and how the machine moved."""
    head = (
        f"**Latency target {check.target_ms:g} ms on {check.device}: "
        + (f"{'met' if check.met else 'not met'} at step {check.step} ({_judged(check)})")
        + f".** The benchmark timed the trained student's `{check.artifact}` at {check.bench_ms:.3f} ms (p50, "
        f"batch 1): {'within' if check.bench_ms <= check.target_ms else 'over'} the target."
    )
    if check.teacher_ms is None or check.teacher_then_ms is None:
        return head
    drift = check.teacher_ms / check.teacher_then_ms - 1
    moved = (
        "as fast as when the steps were timed"
        if abs(drift) <= check.teacher_spread
        else f"{abs(drift):.0%} {'slower' if drift > 0 else 'faster'} than when the steps were timed"
    )
    return (
        f"{head} In the same rounds the teacher's `{check.teacher_artifact}` took {check.teacher_ms:.3f} ms against "
        f"{check.teacher_then_ms:.3f} ms at step 0: the machine ran {moved}, and the student runs in "
        f"{check.bench_ms / check.teacher_ms:.2f}× the teacher's time"
        + (f" ({check.step_share:.2f}× at its step)." if check.step_share is not None else ".")
    )


def document(report: Report, figures: dict[str, FigureFile]) -> list[Block]:
    """The whole report: summary, side by side, each device, each run's distillation and stages, verdict."""
    many_runs = len(report.runs) > 1
    blocks = summary_blocks(report) + side_by_side(report)
    for section in report.devices:
        blocks += device_blocks(section, report, figures, many_runs)
    for run in report.runs:
        blocks += run_blocks(run, figures, many_runs)
    if CURVES in figures:
        blocks += [
            ("h2", "Distillation curves"),
            ("img", CURVES, "student val top-1 and teacher-student KL per epoch", ""),
        ]
    problems = report.failed + report.over_budget + report.unmet + report.latency_unmet
    problems += [f"{t.UNSTABLE} unstable: {u}" for u in report.unstable]
    blocks += [("h2", "Verdict"), ("p", f"**This report {_verdict(report)}.**")]
    if problems:
        blocks.append(("ul", problems))
    return blocks
