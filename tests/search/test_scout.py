"""The scout library on tiny inputs: candidates built, exported and timed together, failures kept in the table with
their reason, a rerun served from the cache, the choice within the budget, and the one-line errors."""

from __future__ import annotations

import json

import pytest

from edgekd.errors import EdgekdError
from edgekd.models import ModelSpec
from edgekd.ondevice.measure import Settings
from edgekd.ondevice.records import Latency, RecordError
from edgekd.run_records import ScoutChoice, ScoutEntry, ScoutTable
from edgekd.rundir import RunDir
from edgekd.search import candidates
from edgekd.search.scout import choose, scout_devices

TEACHER = ModelSpec("resnet8", 10, 1, 16)
QUICK = Settings((1,), warmup=1, min_runs=3, min_seconds=0.0, repeats=2, threads=1)


def _scout(run: RunDir, names: list[str], budget: float = 1000.0) -> ScoutTable:
    (table,) = scout_devices(names, TEACHER, QUICK, 17, ["local"], {"local": budget}, run, lambda _: None)
    return table


def test_a_candidate_that_fails_stays_in_the_table_and_a_rerun_is_served_from_the_cache(tmp_path):
    run = RunDir(tmp_path)
    names = ["resnet8", "no_such_net", "timm/resnet18", "prune/0.5"]
    first = _scout(run, names)
    assert [e.candidate for e in first.entries] == names  # the order asked for, failures included
    ok, bad, timm, pruned = first.entries
    assert ok.status == "done" and ok.p50_ms > 0 and ok.params == 77754 and ok.macs > 0 and ok.within_budget
    assert bad.status == "failed" and "unknown model 'no_such_net'" in bad.reason and bad.latency is None
    if candidates.unavailable("timm/resnet18"):
        assert timm.status == "skipped" and "timm is not installed" in timm.reason
    assert pruned.status == "done" and pruned.macs <= ok.macs * 0.5 and pruned.params < ok.params
    assert not any(e.cached for e in first.entries)
    assert first.runtime.startswith("onnxruntime ") and first.precision == "fp32" and first.batch_size == 1
    assert ScoutTable.from_dict(json.loads(run.scout_table("local").read_text())) == first
    assert run.scout_plot("local").read_bytes()[:4] == b"\x89PNG"

    again = _scout(run, names)  # served from the cache: the entries say so (speed is benchmarks/' business)
    timed = [e for e in again.entries if e.status == "done"]
    assert [e.candidate for e in timed] == ["resnet8", "prune/0.5"] and all(e.cached for e in timed)
    assert [e.latency for e in timed] == [ok.latency, pruned.latency]  # the same figures
    assert again.entry("no_such_net").status == "failed"  # failures are tried again, never cached
    (fresh,) = scout_devices(["resnet8"], TEACHER, QUICK, 17, ["local"], {}, run, lambda _: None, fresh=True)
    assert not fresh.entries[0].cached and fresh.entries[0].within_budget is None  # timed again; no budget given


def test_the_pruned_teacher_rebuilds_from_its_spec_and_the_trained_one_gets_the_same_layers():
    model, spec = candidates.build("prune/0.5", TEACHER)
    params, macs = candidates.size(model, spec)
    assert spec.structure and candidates.size(spec.build(), spec) == (params, macs)
    teacher_macs = candidates.size(*candidates.build("resnet8", TEACHER))[1]
    assert macs <= 0.5 * teacher_macs
    trained, _ = candidates.build("resnet8", TEACHER)
    _, from_trained = candidates.build("prune/0.5", TEACHER, trained=trained)
    assert from_trained.structure == spec.structure


def test_the_default_candidates_are_the_registry_models_smaller_than_the_teacher_and_two_pruned_teachers():
    sizes = {"resnet8": (1, 10), "resnet14": (2, 20), "mnasnet0_5": (3, 5), "resnet20": (4, 40)}
    names = candidates.defaults(ModelSpec("resnet14", 10, 1, 16), sizes.get)
    assert names == ["resnet8", "mnasnet0_5", "prune/0.5", "prune/0.25"]


def test_a_device_devices_yaml_does_not_define_is_refused_in_one_line_before_anything_is_built(tmp_path):
    devices = tmp_path / "devices.yaml"
    devices.write_text("devices: {orin: {host: 10.0.0.2, kind: jetson-orin-nano}}\n")
    for path, says in ((devices, "no device named 'xavier'"), (tmp_path / "none.yaml", "devices file not found")):
        with pytest.raises(EdgekdError) as e:
            scout_devices(
                ["resnet8"], TEACHER, QUICK, 17, ["local", "xavier"], {}, RunDir(tmp_path), print, devices_file=path
            )
        message = str(e.value)
        assert "\n" not in message and message.startswith("scout device 'xavier': ") and says in message
        assert not RunDir(tmp_path).scout_cache.exists()


def _latency(p50: float) -> Latency:
    return Latency(1, 3, p50, p50, p50, p50, 0.0, p50, p50, 1000 / p50, [p50, p50], 0.05)


def _table(budget: float) -> ScoutTable:
    entries = [
        ScoutEntry("big", "done", macs=40, latency=_latency(2.0)),
        ScoutEntry("mid", "done", macs=20, latency=_latency(0.9)),
        ScoutEntry("wide", "done", macs=10, latency=_latency(0.4)),
        ScoutEntry("broken", "failed", "export failed"),
    ]
    for e in entries:
        e.within_budget = e.p50_ms <= budget if e.latency else None
    return ScoutTable("local", "onnxruntime", "fp32", 1, budget, "now", entries=entries)


def test_the_choice_is_the_most_macs_within_the_budget_and_nothing_within_it_names_the_fastest():
    assert choose(_table(1.0)).candidate == "mid"
    assert _table(1.0).pareto() == ["wide", "mid", "big"]
    with pytest.raises(EdgekdError) as e:
        choose(_table(0.1))
    message = str(e.value)
    assert message.startswith("benchmark.budget.latency_ms.local: no scout candidate runs within 0.1 ms")
    assert "the fastest, wide, takes 0.400 ms" in message and "\n" not in message


def test_a_candidate_within_the_budget_but_not_its_headroom_is_tight_and_not_chosen(tmp_path):
    run = RunDir(tmp_path)
    (timed,) = scout_devices(["resnet8"], TEACHER, QUICK, 17, ["local"], {}, run, lambda _: None)
    budget = timed.entries[0].p50_ms * 1.05  # 5% over its measured figure: within the budget, not 10% headroom
    (table,) = scout_devices(
        ["resnet8"], TEACHER, QUICK, 17, ["local"], {"local": budget}, run, lambda _: None, headroom=0.1
    )
    entry = table.entries[0]
    assert entry.cached and table.mark(entry) == "tight" and table.limit_ms == pytest.approx(budget * 0.9)
    with pytest.raises(EdgekdError) as e:
        choose(table)
    assert f"within {budget * 0.9:.3g} ms ({budget:g} ms less scout.headroom 10%)" in str(e.value)
    assert "lower scout.headroom" in str(e.value)
    assert ScoutTable.from_dict(json.loads(run.scout_table("local").read_text())) == table
    (table,) = scout_devices(
        ["resnet8"], TEACHER, QUICK, 17, ["local"], {"local": budget}, run, lambda _: None, headroom=0
    )
    assert table.mark(table.entries[0]) == "within" and choose(table).candidate == "resnet8"


def test_records_round_trip_and_a_bad_field_is_named():
    choice = ScoutChoice("mid", "local", 1.0, "the most MACs", [_table(1.0)])
    assert ScoutChoice.from_dict(json.loads(json.dumps(choice.to_dict()))) == choice
    doc = choice.to_dict()
    doc["tables"][0]["entries"][1]["macs"] = "20"
    with pytest.raises(RecordError, match=r"scout.tables\[0\].entries\[1\].macs: expected int"):
        ScoutChoice.from_dict(doc)
    doc = choice.to_dict() | {"chosen": "elsewhere"}
    with pytest.raises(RecordError, match="'elsewhere' is not in the table of 'local'"):
        ScoutChoice.from_dict(doc)


def test_the_report_shows_the_choice_and_the_scout_figure_beside_the_benchmarks():
    from edgekd.ondevice.records import ArtifactRecord, BenchDoc
    from edgekd.report.build import scout_check
    from edgekd.report.layout import scout_blocks
    from edgekd.report.model import RunSection

    choice = ScoutChoice("mid", "local", 1.0, "mid: the most MACs", [_table(1.0)])
    student = ArtifactRecord("student_onnx", "done", "export/student.onnx", latency=[_latency(0.92)])
    bench = BenchDoc("mybox", "host", "now", "teacher_onnx", artifacts=[student])
    check = scout_check(choice, [bench])  # `local` is this machine: the host's bench file, whatever its name
    assert (check.scout_ms, check.bench_ms, check.agree) == (0.9, 0.92, True)
    assert check.retimed_ms is None and "no `scout_onnx` record" in check.not_retimed  # a run from before it
    student.latency = [_latency(1.5)]
    assert not scout_check(choice, [bench]).agree
    student.latency = [_latency(0.92)]
    blocks = scout_blocks(RunSection("run", "/r", scout=choice, scout_check=check), {}, "")
    text = " ".join(str(b) for b in blocks)
    assert blocks[0] == ("h2", "Scout") and "**mid: the most MACs**" in text
    table = next(b for b in blocks if b[0] == "table")
    assert [r[0] for r in table[2]] == ["wide", "mid", "big", "broken"]  # fastest first, then the failed
    assert "chosen" in table[2][1][-1] and table[2][3][-1] == "failed: export failed"
    assert "they agree within the spread of their rounds" in text and "The scout's file was not re-timed" in text
    assert "marked unstable" not in text
    student.latency[0].stable = False
    blocks = scout_blocks(RunSection("run", "/r", scout=choice, scout_check=scout_check(choice, [bench])), {}, "")
    assert "a figure is marked unstable: re-measure on a quiet machine" in " ".join(str(b) for b in blocks)
    assert scout_blocks(RunSection("run", "/r"), {}, "") == []


def _retimed(scout_file: float, trained: float):
    """A scout check on `local` whose bench re-timed the scout's file (mid, 0.9 ms when the scout timed it)."""
    from edgekd.ondevice.records import ArtifactRecord, BenchDoc
    from edgekd.report.build import scout_check
    from edgekd.report.layout import scout_blocks
    from edgekd.report.model import RunSection

    choice = ScoutChoice("mid", "local", 1.0, "mid: the most MACs", [_table(1.0)])
    records = [
        ArtifactRecord("student_onnx", "done", "export/student.onnx", latency=[_latency(trained)]),
        ArtifactRecord("scout_onnx", "done", "scout/chosen.onnx", latency=[_latency(scout_file)]),
    ]
    check = scout_check(choice, [BenchDoc("mybox", "host", "now", "teacher_onnx", artifacts=records)])
    blocks = scout_blocks(RunSection("run", "/r", scout=choice, scout_check=check), {}, "")
    return check, next(b[1] for b in blocks if b[0] == "p" and "Scout vs benchmark" in b[1])


def test_the_trained_student_is_judged_against_the_scouts_file_re_timed_in_the_same_rounds():
    # the machine ran 44% slower at the benchmark than at the scout: the trained student agrees with the scout's own
    # file timed beside it, though not with the scout's figure from the earlier moment
    check, text = _retimed(1.3, 1.32)
    assert (check.scout_ms, check.retimed_ms, check.bench_ms) == (0.9, 1.3, 1.32)
    assert check.agree and not check.steady and check.drift == pytest.approx(1.3 / 0.9 - 1)
    assert check.not_retimed is None and check.stable
    for figure in ("`mid` at 0.900 ms", "(`scout_onnx`) at 1.300 ms", "`student_onnx` at 1.320 ms"):
        assert figure in text
    assert "in the same interleaved rounds" in text
    assert "the scout's file and the trained student agree within the spread of their rounds: training did" in text
    assert "The same file ran 44% slower in the benchmark than when the scout timed it: the machine" in text
    check, text = _retimed(1.3, 1.5)  # beside each other the trained weights ran slower: the weights, not the machine
    assert (
        not check.agree and "the trained student differ by more than the spread of their rounds, timed at one" in text
    )
    check, text = _retimed(0.91, 0.92)
    assert check.agree and check.steady and "The same file ran as fast as when the scout timed it (+1%" in text
    check, text = _retimed(0.6, 0.61)
    assert check.agree and "ran 33% faster in the benchmark" in text


def test_on_a_device_the_scout_figure_is_checked_against_the_students_engine_of_the_row_it_judged():
    from edgekd.ondevice.records import ArtifactRecord, BenchDoc
    from edgekd.report.build import scout_check
    from edgekd.report.layout import scout_blocks
    from edgekd.report.model import RunSection

    table = _table(1.0)
    table.device = "orin"
    table.entry("mid").artifact = "onnx_file_trt_fp16"  # the scout judged mid's fp16 engine on orin
    choice = ScoutChoice("mid", "orin", 1.0, "mid", [table])
    onnx = ArtifactRecord("student_onnx", "done", "export/student.onnx", latency=[_latency(5.0)])
    fp16 = ArtifactRecord("student_trt_fp16", "done", "tensorrt/orin/student_trt_fp16.engine", latency=[_latency(0.91)])
    scout_file = ArtifactRecord("scout_onnx", "done", "scout/chosen.onnx", latency=[_latency(3.0)])
    host = BenchDoc("mybox", "host", "now", "teacher_onnx", artifacts=[scout_file])  # timed here, not on orin
    check = scout_check(choice, [host, BenchDoc("orin", "jetson", "now", "teacher_onnx", artifacts=[onnx, fp16])])
    assert (check.artifact, check.bench_ms, check.agree) == ("student_trt_fp16", 0.91, True)
    assert check.retimed_ms is None and check.drift is None and check.not_retimed.startswith("the benchmark on orin")
    blocks = scout_blocks(RunSection("run", "/r", scout=choice, scout_check=check), {}, "")
    text = next(b[1] for b in blocks if b[0] == "p" and "Scout vs benchmark on orin" in b[1])
    assert "`mid` at 0.900 ms" in text and "`student_trt_fp16` at 0.910 ms" in text and "3.000" not in text
    assert "The scout's file was not re-timed" in text and "from different moments" in text
