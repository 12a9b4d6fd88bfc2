"""A config file and the files it names are untrusted input: bounded YAML aliases, and `validate` checks the
files the way `run` opens them (checkpoints are regular files, an imagefolder root holds train/ and val/)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.config import load_devices, load_pipeline
from edgekd.errors import EdgekdError

MODELS = "name: t\nteacher: {model: resnet8}\nstudent: {model: resnet8}\n"


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """Each level lists the previous one `width` times: width**levels values from a few hundred bytes."""
    lines = ["l0: &l0 [" + ", ".join(["lol"] * width) + "]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


TIMED_VALIDATE = """\
import sys, time
from typer.testing import CliRunner
from edgekd.cli import app
start = time.monotonic()
result = CliRunner().invoke(app, ["validate", sys.argv[1]])
print(result.exit_code, round(time.monotonic() - start, 3))
print(result.output)
"""


@pytest.mark.parametrize(
    "text, fragment",
    [
        (alias_bomb(), "more than 64 YAML aliases"),  # 9**9 values from 81 aliases
        (alias_bomb(levels=8, width=7), "expand to more than 50000 values"),  # 7**8 values from 49 aliases
    ],
    ids=["many-aliases", "few-aliases-huge-expansion"],
)
def test_validate_refuses_an_alias_bomb_without_expanding_it(tmp_path, text, fragment):
    """Through the CLI: exit 2 with one line. An expanding loader would still be busy when the subprocess's timeout
    ends it (the bombs expand to billions of nodes); the speed itself is a figure, not an assertion (0.04 s here)."""
    path = tmp_path / "bomb.yaml"
    path.write_text(MODELS + text)
    proc = subprocess.run([sys.executable, "-c", TIMED_VALIDATE, str(path)], capture_output=True, text=True, timeout=60)
    code, _seconds = proc.stdout.split("\n", 1)[0].split()
    assert int(code) == 2 and fragment in proc.stdout and "Traceback" not in proc.stdout, proc.stdout + proc.stderr


def test_deep_nesting_is_one_line_error(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text(MODELS + "a: " + "[" * 3000 + "]" * 3000 + "\n")
    with pytest.raises(EdgekdError, match="deep.yaml: YAML nested too deeply"):
        load_pipeline(path)


def test_devices_file_alias_bomb_is_refused(tmp_path):
    path = tmp_path / "devices.yaml"
    path.write_text(alias_bomb() + "devices: {}\n")
    with pytest.raises(EdgekdError, match=r"devices.yaml:\d+: more than 64 YAML aliases"):
        load_devices(path)


def test_a_few_aliases_still_work(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(MODELS + "benchmark: {batch_sizes: &sizes [1, 2]}\nexport: {parity_batch: 8}\n")
    assert load_pipeline(path).benchmark.batch_sizes == [1, 2]
    path.write_text(MODELS + "benchmark: {batch_sizes: &sizes [1, 2]}\ndistill: {augment: {}}\n" + "x: *sizes\n")
    with pytest.raises(EdgekdError, match="unknown key 'x'"):  # the alias loaded; the key is then refused as usual
        load_pipeline(path)


def validate(tmp_path: Path, extra: str) -> tuple[int, str]:
    path = tmp_path / "p.yaml"
    path.write_text(MODELS + extra)
    result = CliRunner().invoke(app, ["validate", str(path)])
    return result.exit_code, " ".join(result.output.split())


def test_validate_refuses_a_folder_as_checkpoint(tmp_path):
    (tmp_path / "ckpt").mkdir()
    assert validate(tmp_path, "")[0] == 0
    text = MODELS.replace("teacher: {model: resnet8}", f"teacher: {{model: resnet8, checkpoint: {tmp_path / 'ckpt'}}}")
    (tmp_path / "p.yaml").write_text(text)
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "p.yaml")])
    assert result.exit_code == 2 and "teacher.checkpoint:" in result.output and "is a folder" in result.output


@pytest.mark.parametrize(
    "data, fragment",
    [
        ("{dataset: imagefolder, root: /dev/zero}", "data.root: /dev/zero is not a folder"),
        ("{dataset: cifar10, root: /dev/zero}", "data.root: /dev/zero is not a folder"),
        ("{dataset: imagefolder, root: ROOT}", "val/<class>/<images>"),
        ("{dataset: imagefolder, root: ROOT/missing}", "is not found"),
    ],
)
def test_validate_checks_the_data_root(tmp_path, data, fragment):
    (tmp_path / "train" / "a").mkdir(parents=True)  # no val/
    code, out = validate(tmp_path, f"data: {data.replace('ROOT', str(tmp_path))}\n")
    assert code == 2 and fragment in out, out


def test_validate_refuses_a_device_file_as_checkpoint(tmp_path):
    text = MODELS.replace("student: {model: resnet8}", "student: {model: resnet8, init_checkpoint: /dev/zero}")
    (tmp_path / "p.yaml").write_text(text)
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "p.yaml")])
    assert result.exit_code == 2 and "student.init_checkpoint: /dev/zero is not a regular file" in result.output


def test_validate_accepts_a_complete_imagefolder(tmp_path):
    for split in ("train", "val"):
        (tmp_path / "data" / split / "a").mkdir(parents=True)
    code, out = validate(tmp_path, f"data: {{dataset: imagefolder, root: {tmp_path / 'data'}}}\n")
    assert code == 0, out
