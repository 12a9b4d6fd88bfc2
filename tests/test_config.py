from pathlib import Path

import pytest

from edgekd.config import load_pipeline
from edgekd.errors import EdgekdError

BASE = """\
name: t
data:
  dataset: digits
  image_size: 16
teacher:
  model: resnet8
student:
  model: resnet8
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "p.yaml"
    p.write_text(text)
    return p


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(EdgekdError) as e:
        load_pipeline(write(tmp_path, text))
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_valid_pipeline_loads_with_defaults(tmp_path):
    cfg = load_pipeline(write(tmp_path, BASE))
    assert cfg.name == "t" and cfg.distill.temperature == 4.0 and cfg.teacher.model == "resnet8"


def test_typo_names_key_line_and_nearest(tmp_path):
    msg = error_of(tmp_path, BASE + "distill:\n  temprature: 3\n")
    assert "distill.temprature" in msg and "p.yaml:10" in msg and "did you mean 'temperature'" in msg


def test_unknown_nested_key(tmp_path):
    msg = error_of(tmp_path, BASE + "distill:\n  augment:\n    hfilp: true\n")
    assert "distill.augment.hfilp" in msg and "did you mean 'hflip'" in msg


def test_unknown_top_level_key(tmp_path):
    msg = error_of(tmp_path, BASE + "distil:\n  epochs: 1\n")
    assert "'distil'" in msg and "did you mean 'distill'" in msg


@pytest.mark.parametrize(
    "section, expect",
    [
        ("distill:\n  temperature: 0\n", "temperature must be > 0"),
        ("distill:\n  soft_weight: -1\n", "distill.soft_weight"),
        ("distill:\n  epochs: -1\n", "distill.epochs"),
        ("distill:\n  epochs: many\n", "valid integer"),
        ("data:\n  image_size: 16\n  batch_size: 0\n", "data.batch_size"),
    ],
)
def test_wrong_values(tmp_path, section, expect):
    text = BASE.replace("data:\n  dataset: digits\n  image_size: 16\n", "") if section.startswith("data") else BASE
    msg = error_of(tmp_path, text + section)
    assert expect in msg, msg


def test_missing_file_and_malformed_yaml(tmp_path):
    with pytest.raises(EdgekdError, match="not found"):
        load_pipeline(tmp_path / "nope.yaml")
    msg = error_of(tmp_path, "name: t\nteacher: [unclosed\n")
    assert "malformed YAML" in msg and "p.yaml:" in msg


def test_missing_required_section(tmp_path):
    msg = error_of(tmp_path, "name: t\nstudent:\n  model: resnet8\n")
    assert "missing required key 'teacher'" in msg


def test_relative_paths_resolve_against_the_yaml_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    p = tmp_path / "sub" / "p.yaml"
    p.write_text(
        BASE.replace("dataset: digits", "dataset: imagefolder\n  root: ../images").replace(
            "  model: resnet8\nstudent", "  model: resnet8\n  checkpoint: ckpt/t.pt\nstudent"
        )
    )
    cfg = load_pipeline(p)
    assert cfg.data.root == (tmp_path / "images").resolve()
    assert cfg.teacher.checkpoint == (tmp_path / "sub" / "ckpt" / "t.pt").resolve()


def test_example_pipelines_validate():
    root = Path(__file__).resolve().parents[1] / "pipelines"
    files = sorted(root.glob("*.yaml"))
    assert len(files) >= 2
    for f in files:
        load_pipeline(f)


def test_latency_budget_is_judged_at_a_timed_batch(tmp_path):
    ok = load_pipeline(write(tmp_path, BASE + "benchmark:\n  budget:\n    latency_ms: {local: 2.5, xavier: 4}\n"))
    assert ok.benchmark.budget.latency_ms == {"local": 2.5, "xavier": 4.0} and ok.benchmark.budget.latency_batch == 1
    msg = error_of(tmp_path, BASE + "benchmark:\n  budget:\n    latency_ms: {local: 2.5}\n    latency_batch: 4\n")
    assert "latency_batch: 4 is not timed" in msg and "batch_sizes" in msg


def test_auto_student_needs_a_budget_on_the_scouts_first_device(tmp_path):
    auto = BASE.replace("student:\n  model: resnet8", "student:\n  model: auto")
    msg = error_of(tmp_path, auto + "scout:\n  devices: [xavier, local]\n")
    assert "benchmark.budget.latency_ms.xavier" in msg
    cfg = load_pipeline(write(tmp_path, auto + "benchmark:\n  budget:\n    latency_ms: {local: 3}\n"))
    assert cfg.student.auto and cfg.scout.devices == ["local"]


def test_scout_candidates_name_a_share_in_range_once(tmp_path):
    ok = load_pipeline(write(tmp_path, BASE + "scout:\n  candidates: [resnet8, prune/0.5, timm/resnet18]\n"))
    assert ok.scout.candidates == ["resnet8", "prune/0.5", "timm/resnet18"]
    for bad in ("prune/1.5", "prune/half", "prune/0"):
        assert "needs a share of the teacher's MACs in (0, 1)" in error_of(
            tmp_path, BASE + f"scout:\n  candidates: [{bad}]\n"
        )
    assert "resnet8 is listed twice" in error_of(tmp_path, BASE + "scout:\n  candidates: [resnet8, resnet8]\n")


def test_auto_student_refuses_settings_that_name_student_layers(tmp_path):
    auto = BASE.replace("student:\n  model: resnet8", "student:\n  model: auto") + (
        "benchmark:\n  budget:\n    latency_ms: {local: 3}\n"
    )
    msg = error_of(tmp_path, auto + "distill:\n  features: [{teacher: layer2, student: layer2}]\n")
    assert "distill.features names student layers" in msg and "not known before the scout runs" in msg
    assert "qat.keep_float names student layers" in error_of(tmp_path, auto + "qat:\n  keep_float: [fc]\n")
