"""The run directory has one owner (edgekd/rundir.py): nobody else spells its file names, paths stay inside
it, a failed attempt never touches the last finished files, and the manifest and report need no torch."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import edgekd
from edgekd.config import load_pipeline
from edgekd.errors import EdgekdError
from edgekd.manifest import Manifest
from edgekd.ondevice import catalog
from edgekd.pipeline import Runner, StageResult
from edgekd.rundir import MANIFEST, SHIP_RECORD, RunDir, check_name

PACKAGE = Path(edgekd.__file__).parent
OWNED_ELSEWHERE = ["stages", "bench", "fleet", "report", "cli.py"]
"""Where no run-directory file name may be spelled out or joined by hand."""


def _run_dir_names() -> set[str]:
    names = {MANIFEST, SHIP_RECORD}
    for row in catalog.ARTIFACTS:
        names.add(row.file)
        if "{device}" not in row.file:
            names.add(Path(row.file).name)
    return names


def _folders() -> set[str]:
    return {Path(row.file).parts[0] for row in catalog.ARTIFACTS}


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def run_dir_spellings(source: str) -> list[str]:
    """String constants that are run-directory file names, and `/` joins with a run-directory folder name."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    names, folders = _run_dir_names(), _folders()
    found = []
    for node in ast.walk(tree):
        text = node.value if isinstance(node, ast.Constant) and id(node) not in skip else None
        if isinstance(text, str) and (text in names or any(text.startswith(f"{f}/") for f in folders)):
            found.append(f"line {node.lineno}: {text!r}")
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            for side in (node.left, node.right):
                if isinstance(side, ast.Constant) and side.value in folders:
                    found.append(f"line {node.lineno}: joins {side.value!r}")
    return found


def test_the_scan_finds_what_it_looks_for():
    assert run_dir_spellings('p = run_dir / "bench" / f"{d}.json"') == ["line 1: joins 'bench'"]
    assert run_dir_spellings('out = ctx.stage_dir / "student.pt"') == ["line 1: 'student.pt'"]
    assert run_dir_spellings('m = root / "manifest.json"') == ["line 1: 'manifest.json'"]
    assert run_dir_spellings('def f():\n    """bench/<device>.json in prose"""\n    return ctx.out("bench")') == []


@pytest.mark.parametrize("place", OWNED_ELSEWHERE)
def test_no_module_spells_out_a_run_directory_path(place):
    files = [PACKAGE / place] if place.endswith(".py") else sorted((PACKAGE / place).rglob("*.py"))
    found = {str(f.relative_to(PACKAGE)): run_dir_spellings(f.read_text()) for f in files}
    assert not {k: v for k, v in found.items() if v}, "ask edgekd.rundir.RunDir (or ctx.out) for these paths"


def test_manifest_and_report_import_without_torch():
    code = "import sys; sys.modules['torch'] = None; import edgekd.manifest, edgekd.report, edgekd.rundir"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    "relative", ["../x.onnx", "export/../../x.onnx", "/etc/passwd", "a/../../../b"], ids=["up", "nested", "abs", "deep"]
)
def test_paths_from_outside_stay_inside(tmp_path, relative):
    with pytest.raises(EdgekdError, match="outside the run directory|is absolute"):
        RunDir(tmp_path).inside(relative, "manifest")


@pytest.mark.parametrize("name", ["../../elsewhere/x", "/abs", "a/b", ".hidden", "", "x\n", "x" * 65, "a b"])
def test_device_names_are_plain_names(name, tmp_path):
    with pytest.raises(EdgekdError, match="device name: .* is not a plain name"):
        RunDir(tmp_path).bench_file(name)
    with pytest.raises(EdgekdError):
        check_name(name, "benchmark.device_name")


def test_a_manifest_path_outside_the_run_is_never_vouched_for(tmp_path):
    outside = tmp_path / "elsewhere" / "x.onnx"
    outside.parent.mkdir()
    outside.write_bytes(b"payload")
    run = tmp_path / "run"
    run.mkdir()
    from edgekd.ondevice.files import sha256_file

    entry = {"path": "../elsewhere/x.onnx", "sha256": sha256_file(outside), "bytes": 7}
    doc = {"stages": {"export": {"status": "done", "artifacts": {"student_onnx": entry}}}}
    (run / MANIFEST).write_text(json.dumps(doc))
    with pytest.raises(EdgekdError, match="outside the run directory"):
        Manifest(run).vouched()


class _Teacher:
    """A stage that writes the teacher artifact through ctx.out, then fails when told to."""

    name = section = "teacher"
    reads = ("seed", "teacher")
    needs: tuple[str, ...] = ()
    uses: tuple[str, ...] = ()
    toolchain: tuple[str, ...] = ()
    distributed = False

    def __init__(self, payload: bytes, fail: bool) -> None:
        self.payload, self.fail = payload, fail

    def skip_reason(self, cfg):
        return None

    def run(self, ctx, cfg, inputs):
        out = ctx.out("teacher")
        out.write_bytes(self.payload)
        (out.parent / "notes.txt").write_text("beside the artifact")  # promoted with it
        if self.fail:
            raise EdgekdError("teacher: the check after writing failed")
        return StageResult({"teacher": out})


def test_a_failed_attempt_leaves_the_finished_files_alone(tiny_pipeline, tmp_path):
    cfg = load_pipeline(tiny_pipeline())
    run = RunDir(tmp_path / "run")
    Runner(cfg, [_Teacher(b"good", fail=False)], run.root).run()
    assert run.path("teacher").read_bytes() == b"good" and (run.stage_dir("teacher") / "notes.txt").is_file()
    with pytest.raises(EdgekdError):
        Runner(cfg.model_copy(update={"seed": 1}), [_Teacher(b"bad", fail=True)], run.root).run()
    assert run.path("teacher").read_bytes() == b"good"  # untouched
    assert (run.failed_dir("teacher") / "model.pt").read_bytes() == b"bad"  # kept for inspection
    manifest = Manifest(run)
    assert manifest.stage("teacher").status == "failed" and manifest.done("teacher").status == "done"
    assert manifest.vouched()["teacher"] == run.path("teacher")
    assert not (run.root / ".staging").exists() or not any((run.root / ".staging").rglob("*.pt"))


def test_a_second_writer_is_refused_naming_the_holder(tiny_pipeline, tmp_path):
    run = RunDir(tmp_path / "run")
    hold = f"from edgekd.rundir import RunDir\nimport time\nwith RunDir({str(run.root)!r}).locked('edgekd run'):\n    print('held', flush=True)\n    time.sleep(60)\n"
    child = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        assert run.lock_holder().startswith(f"PID {child.pid} (edgekd run")
        with pytest.raises(EdgekdError, match=f"in use by PID {child.pid} \\(edgekd run"):
            Runner(load_pipeline(tiny_pipeline()), [_Teacher(b"x", fail=False)], run.root).run()
        assert not run.path("teacher").exists() and not run.manifest.exists()
    finally:
        child.kill()
        child.wait()
    assert run.lock_holder() is None  # the lock went with the process
    Runner(load_pipeline(tiny_pipeline()), [_Teacher(b"x", fail=False)], run.root).run()


def test_files_made_from_an_earlier_input_are_not_vouched_for(tmp_path):
    """An upstream stage ran again and a later stage failed before the ones after it: their old files stay home."""
    from edgekd.manifest import ArtifactEntry, StageRecord
    from edgekd.ondevice.files import sha256_file

    run = RunDir(tmp_path)
    manifest = Manifest(run)

    def made(art_id: str, content: bytes) -> ArtifactEntry:
        path = run.path(art_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        return ArtifactEntry(run.relative(path), sha256_file(path), len(content))

    old_student = made("student", b"student 1")
    manifest.record("distill", StageRecord("done", artifacts={"student": old_student}))
    onnx = made("student_onnx", b"onnx of student 1")
    manifest.record(
        "export", StageRecord("done", inputs={"student": old_student.sha256}, artifacts={"student_onnx": onnx})
    )
    assert set(manifest.vouched()) == {"student", "student_onnx"} and manifest.stale() == {}

    manifest.record("distill", StageRecord("done", artifacts={"student": made("student", b"student 2")}))
    assert set(manifest.vouched()) == {"student"}
    assert manifest.stale() == {"export": "made from an earlier student; run the pipeline again"}


class _Skipped(_Teacher):
    """The same stage, skipped by its config."""

    def skip_reason(self, cfg):
        return "switched off for this run"


def test_a_skip_keeps_the_last_finished_record(tiny_pipeline, tmp_path):
    """Issue 22 item 7: a skipped stage dropped its done record, so turning it back on re-ran it (and a skip
    upstream turned every downstream done record into 'skipped')."""
    cfg = load_pipeline(tiny_pipeline())
    run = RunDir(tmp_path / "run")
    Runner(cfg, [_Teacher(b"good", fail=False)], run.root).run()
    skipped = Runner(cfg, [_Skipped(b"other", fail=False)], run.root).run()
    assert skipped.stage("teacher").status == "skipped" and skipped.done("teacher").status == "done"
    assert "teacher" not in skipped.vouched()  # not offered while skipped
    again = Runner(cfg, [_Teacher(b"other", fail=False)], run.root).run()
    assert again.stage("teacher").status == "cached" and run.path("teacher").read_bytes() == b"good"


@pytest.mark.parametrize(
    "stages, fragment",
    [
        ({"export": "done"}, "stages.export: expected dict, got 'done'"),
        ({"export": {"status": "finished"}}, "stages.export.status: 'finished' is not one of done, cached"),
        (
            {"export": {"status": "done", "artifacts": {"student_onnx": {"path": 7, "sha256": "0" * 64, "bytes": 1}}}},
            "stages.export.artifacts.student_onnx.path: expected str, got 7",
        ),
        (
            {"export": {"status": "done", "artifacts": {"student_onnx": {"path": "export/student.onnx", "bytes": 1}}}},
            "stages.export.artifacts.student_onnx.sha256: expected str, got None",
        ),
        ({"export": {"status": "failed", "last_done": []}}, "stages.export.last_done: expected dict, got []"),
    ],
    ids=["stage-is-a-string", "unknown-status", "path-is-an-int", "no-sha256", "last-done-is-a-list"],
)
def test_a_malformed_manifest_entry_is_one_line_naming_the_field(tiny_pipeline, tmp_path, stages, fragment):
    """Issue 22 item 8: these raised TypeError/KeyError from `plan`, `run` and `ship`."""
    from typer.testing import CliRunner

    from edgekd.cli import app

    run = tmp_path / "run"
    run.mkdir()
    (run / MANIFEST).write_text(json.dumps({"stages": stages}))
    result = CliRunner().invoke(app, ["plan", str(tiny_pipeline()), "--run-dir", str(run)])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    message = " ".join(result.stderr.split())
    assert (
        f"{run / MANIFEST}: corrupt manifest: {fragment}" in message and "delete it to start the run afresh" in message
    )


class _Unreturned(_Teacher):
    """A stage that writes its artifact, finds it fails a check of its own, and finishes without it."""

    def run(self, ctx, cfg, inputs):
        ctx.out("teacher").write_bytes(self.payload)
        return StageResult(metrics={"teacher": "failed its check"})


def test_a_file_the_stage_did_not_return_never_reaches_its_catalogue_path(tiny_pipeline, tmp_path):
    """Like a PTQ file that failed parity while QAT went on: the finished stage's last good file stays."""
    cfg = load_pipeline(tiny_pipeline())
    run = RunDir(tmp_path / "run")
    Runner(cfg, [_Teacher(b"good", fail=False)], run.root).run()
    Runner(cfg.model_copy(update={"seed": 1}), [_Unreturned(b"bad", fail=False)], run.root).run()
    assert run.path("teacher").read_bytes() == b"good"
    assert (run.failed_dir("teacher") / "model.pt").read_bytes() == b"bad"
    assert "teacher" not in Manifest(run).vouched()  # the new record made no teacher
