"""The artifact catalogue: every file a pipeline makes, one row each, the way Ultralytics' export_formats() is one table.

Stages, cache keys, the host benchmark, the bundle, the device bench and the report all read this
table, so an artifact has the same id on the host, in the bundle, on every device and in every
report. Adding an artifact = one row + the code that makes it. TensorRT engines are rows too: one
per (source ONNX, precision), built wherever TensorRT runs and kept under tensorrt/<device>/.

This module lives in ondevice/ (Python 3.8, stdlib only) because the device bench reads it too.
"""

from typing import List, NamedTuple, Optional, Tuple

RUNTIMES = ("torch", "torchscript", "onnxruntime", "tensorrt")

ENGINE_PRECISIONS = ("fp32", "fp16", "int8")
"""What a TensorRT engine is built at (trt_options.validate_options, the `tensorrt.precisions` key)."""

ARTIFACT_PRECISIONS = ENGINE_PRECISIONS + ("int8-dynamic",)
"""Every artifact's precision: the engines' and dynamic int8 (int8 weights, activations quantized at run time);
"" for files that are not models."""


class Artifact(NamedTuple):
    """One row. `file` is relative to the run directory; engines put `{device}` where the device name goes, and the
    rows of ONNX files given to `edgekd bench FILE.onnx` put `{name}` where that file's name goes (several files
    share one bench: each record says whose row it is).

    model:    teacher | student | baseline | file (an ONNX file given to `edgekd bench`) | scout (the scout's choice as
              it timed it: untrained, a latency control, never scored: LATENCY_ONLY) | none (not models)
    runtime:  what loads it for benchmarking (RUNTIMES), or "" for files no runtime loads
    precision: one of ARTIFACT_PRECISIONS, or "" for files that are not models
    ships:    copied to devices in the bundle (ONNX files the device runs or builds engines from)
    bench:    where it is timed: "host" (torch/TorchScript), "any" (host and devices, ONNX Runtime),
              "built" (TensorRT engines: on the machine that built them), or "" (not benchmarked)
    source:   for engines, the id of the ONNX artifact it is built from
    label:    what a report calls it
    """

    id: str
    stage: str
    file: str
    model: str
    runtime: str
    precision: str
    ships: bool
    bench: str
    source: Optional[str]
    label: str


def _row(
    id: str,
    stage: str,
    file: str,
    model: str,
    runtime: str,
    precision: str,
    ships: bool,
    bench: str,
    source: Optional[str],
    label: str,
) -> Artifact:
    """One row of the table below; an empty label means the id."""
    return Artifact(id, stage, file, model, runtime, precision, ships, bench, source, label or id)


# fmt: off
ARTIFACTS = (
    #    id                           stage            file                                             model       runtime        precision       ships  bench    source              label
    # models: checkpoints (state_dict + spec)
    _row("teacher",                   "teacher",       "teacher/model.pt",                              "teacher",  "torch",       "fp32",         False, "host",  None,               "teacher, PyTorch eager"),
    _row("scout_student",             "scout",         "scout/student.pt",                              "student",  "",            "fp32",         False, "",      None,               "student the scout chose"),
    _row("pruned_student",            "prune",         "prune/student.pt",                              "student",  "",            "fp32",         False, "",      None,               "pruned teacher, recovered"),
    _row("student",                   "distill",       "distill/student.pt",                            "student",  "torch",       "fp32",         False, "host",  None,               "student, PyTorch eager"),
    _row("baseline_student",          "baseline",      "baseline/student.pt",                           "baseline", "torch",       "fp32",         False, "",      None,               "student without KD"),
    _row("student_qat",               "qat",           "qat/student_qat.pt",                            "student",  "",            "int8",         False, "",      None,               "student QAT checkpoint"),
    # exports
    _row("teacher_ts",                "export",        "export/teacher.ts.pt",                          "teacher",  "torchscript", "fp32",         False, "host",  None,               "teacher, TorchScript"),
    _row("teacher_onnx",              "export",        "export/teacher.onnx",                           "teacher",  "onnxruntime", "fp32",         True,  "any",   None,               "teacher, ONNX fp32"),
    _row("student_ts",                "export",        "export/student.ts.pt",                          "student",  "torchscript", "fp32",         False, "host",  None,               "student, TorchScript"),
    _row("student_onnx",              "export",        "export/student.onnx",                           "student",  "onnxruntime", "fp32",         True,  "any",   None,               "student, ONNX fp32"),
    _row("teacher_onnx_fp16",         "export",        "export/teacher_fp16.onnx",                      "teacher",  "onnxruntime", "fp16",         True,  "any",   None,               "teacher, ONNX fp16"),
    _row("student_onnx_fp16",         "export",        "export/student_fp16.onnx",                      "student",  "onnxruntime", "fp16",         True,  "any",   None,               "student, ONNX fp16"),
    # the scout's choice as the scout exported it (untrained weights): re-timed on the host in the benchmark's rounds
    # beside student_onnx, so the scout's figure and the trained student's are compared at one moment
    _row("scout_onnx",                "scout",         "scout/chosen.onnx",                             "scout",    "onnxruntime", "fp32",         False, "host",  None,               "scout's choice, untrained, ONNX fp32 (latency only)"),
    _row("calib_set",                 "export",        "export/calib.npz",                              "none",     "",            "",             False, "",      None,               "training images that calibrate int8 engines"),
    # int8
    _row("student_qat_onnx",          "qat",           "qat/student_int8_qdq.onnx",                     "student",  "onnxruntime", "int8",         True,  "any",   None,               "student, QAT int8 Q/DQ ONNX"),
    _row("student_ptq_onnx",          "qat",           "qat/student_ptq_int8_qdq.onnx",                 "student",  "onnxruntime", "int8",         True,  "any",   None,               "student, PTQ int8 Q/DQ ONNX"),
    _row("student_dynamic_int8_ts",   "dynamic_quant", "dynamic_quant/student_dynamic_int8.ts.pt",      "student",  "torchscript", "int8-dynamic", False, "host",  None,               "student, dynamic int8 TorchScript"),
    _row("student_dynamic_int8_onnx", "dynamic_quant", "dynamic_quant/student_dynamic_int8.onnx",       "student",  "onnxruntime", "int8-dynamic", True,  "any",   None,               "student, dynamic int8 ONNX"),
    # TensorRT engines: fp32/fp16 from fp32 ONNX (fp16 from the fp16 ONNX on TensorRT >= 10), int8 from Q/DQ ONNX
    # on the GPU; int8 on the DLA is calibrated from the fp32 ONNX (student_trt_int8), as is the fallback of a Q/DQ
    # int8 engine whose build fails on the GPU
    _row("teacher_trt_fp32",          "tensorrt",      "tensorrt/{device}/teacher_trt_fp32.engine",     "teacher",  "tensorrt",    "fp32",         False, "built", "teacher_onnx",     "teacher, TensorRT fp32"),
    _row("teacher_trt_fp16",          "tensorrt",      "tensorrt/{device}/teacher_trt_fp16.engine",     "teacher",  "tensorrt",    "fp16",         False, "built", "teacher_onnx",     "teacher, TensorRT fp16"),
    _row("student_trt_fp32",          "tensorrt",      "tensorrt/{device}/student_trt_fp32.engine",     "student",  "tensorrt",    "fp32",         False, "built", "student_onnx",     "student, TensorRT fp32"),
    _row("student_trt_fp16",          "tensorrt",      "tensorrt/{device}/student_trt_fp16.engine",     "student",  "tensorrt",    "fp16",         False, "built", "student_onnx",     "student, TensorRT fp16"),
    _row("student_qat_trt_int8",      "tensorrt",      "tensorrt/{device}/student_qat_trt_int8.engine", "student",  "tensorrt",    "int8",         False, "built", "student_qat_onnx", "student, QAT int8 TensorRT"),
    _row("student_ptq_trt_int8",      "tensorrt",      "tensorrt/{device}/student_ptq_trt_int8.engine", "student",  "tensorrt",    "int8",         False, "built", "student_ptq_onnx", "student, PTQ int8 TensorRT"),
    _row("student_trt_int8",          "tensorrt",      "tensorrt/{device}/student_trt_int8.engine",     "student",  "tensorrt",    "int8",         False, "built", "student_onnx",     "student, int8 TensorRT calibrated"),
    # ONNX files given to `edgekd bench FILE.onnx`, one set per file ({name}): the file goes in the row of its own
    # precision; the fp16 twin (strongly typed fp16 engines) and a Q/DQ copy calibrated on given images are made
    _row("onnx_file",                 "bench",         "models/{name}.onnx",                            "file",     "onnxruntime", "fp32",         True,  "any",   None,               "ONNX file, fp32"),
    _row("onnx_file_fp16",            "bench",         "models/{name}_fp16.onnx",                       "file",     "onnxruntime", "fp16",         True,  "any",   None,               "ONNX file, fp16"),
    _row("onnx_file_int8",            "bench",         "models/{name}_int8_qdq.onnx",                   "file",     "onnxruntime", "int8",         True,  "any",   None,               "ONNX file, int8 Q/DQ"),
    _row("onnx_file_trt_fp32",        "bench",         "tensorrt/{device}/{name}_trt_fp32.engine",      "file",     "tensorrt",    "fp32",         False, "built", "onnx_file",        "ONNX file, TensorRT fp32"),
    _row("onnx_file_trt_fp16",        "bench",         "tensorrt/{device}/{name}_trt_fp16.engine",      "file",     "tensorrt",    "fp16",         False, "built", "onnx_file",        "ONNX file, TensorRT fp16"),
    _row("onnx_file_trt_int8",        "bench",         "tensorrt/{device}/{name}_trt_int8.engine",      "file",     "tensorrt",    "int8",         False, "built", "onnx_file_int8",   "ONNX file, int8 TensorRT"),
    # what the benchmark and report stages write
    _row("distill_metrics",           "distill",       "distill/metrics.jsonl",                         "none",     "",            "",             False, "",      None,               ""),
    _row("distill_settings",          "distill",       "distill/settings.json",                         "none",     "",            "",             False, "",      None,               ""),
    _row("val_set",                   "benchmark",     "bench/val.npz",                                 "none",     "",            "",             False, "",      None,               ""),
    _row("bench",                     "benchmark",     "bench/{device}.json",                           "none",     "",            "",             False, "",      None,               ""),
    _row("report_md",                 "report",        "report/report.md",                              "none",     "",            "",             False, "",      None,               ""),
    _row("report_html",               "report",        "report/report.html",                            "none",     "",            "",             False, "",      None,               ""),
    _row("report_json",               "report",        "report/report.json",                            "none",     "",            "",             False, "",      None,               ""),
)
# fmt: on

BY_ID = {a.id: a for a in ARTIFACTS}  # type: Dict[str, Artifact]

LATENCY_ONLY = ("scout",)
"""Model kinds the harness times but never scores, whatever images it is given: the scout's choice has untrained
weights, so its accuracy means nothing; it is there for its latency beside the trained student's."""

REFERENCE = "teacher_onnx"
"""The artifact every device's speed-ups are measured against: the fp32 teacher in ONNX Runtime runs on
the host and on every device with ONNX Runtime, so the same reference can be named on all of them."""


def get(artifact_id: str) -> Artifact:
    """The row of `artifact_id`; a KeyError names the valid ids."""
    try:
        return BY_ID[artifact_id]
    except KeyError:
        raise KeyError("unknown artifact id {!r}; valid ids: {}".format(artifact_id, ", ".join(BY_ID))) from None


def scored(artifact_id: str) -> bool:
    """Whether the harness scores the artifact's accuracy when it has labelled images (not LATENCY_ONLY models)."""
    return get(artifact_id).model not in LATENCY_ONLY


def made_by(stage: str) -> Tuple[str, ...]:
    """Ids of the artifacts `stage` makes, in catalogue order."""
    return tuple(a.id for a in ARTIFACTS if a.stage == stage)


def counterpart(artifact_id: str, model: str) -> Optional[str]:
    """The row that holds for `model` (a model kind: teacher, student, baseline, file) what `artifact_id` holds for
    its own: the one row of that model with the same runtime and precision, built from the counterpart of its source
    (student_trt_fp16 -> teacher_trt_fp16, onnx_file_trt_fp16 -> student_trt_fp16); None where there is no such row,
    or several (the student's int8 ONNX files are QAT and PTQ: onnx_file_int8 has no one counterpart)."""
    row = get(artifact_id)
    if row.model == "none" or row.model == model:
        return None
    source = counterpart(row.source, model) if row.source else None
    if row.source and source is None:
        return None
    found = [
        a.id
        for a in ARTIFACTS
        if a.model == model and (a.runtime, a.precision) == (row.runtime, row.precision) and a.source == source
    ]
    return found[0] if len(found) == 1 else None


def per_file(artifact_id: str) -> bool:
    """Whether the row is one of an ONNX file given to `edgekd bench` (its path and record name the file)."""
    return "{name}" in get(artifact_id).file


def path_of(artifact_id: str, device: str = "", name: str = "") -> str:
    """Run-dir relative path of an artifact (engines and bench files need the device name, rows of a given ONNX
    file that file's name)."""
    row = get(artifact_id)
    if "{device}" in row.file and not device:
        raise ValueError(f"artifact {artifact_id} lives under a device's folder: pass the device name")
    if ("{name}" in row.file) != bool(name):
        raise ValueError(f"artifact {artifact_id}: pass a file name exactly for the rows of a given ONNX file")
    return row.file.replace("{device}", device).replace("{name}", name)


def engines_for(onnx_id: str, precisions: List[str]) -> List[Artifact]:
    """Engine rows built from `onnx_id` at the requested precisions (int8 only from Q/DQ ONNX, fp32/fp16 from fp32)."""
    return [a for a in ARTIFACTS if a.source == onnx_id and a.precision in precisions]


def benchmarked(where: str) -> List[Artifact]:
    """A run's rows timed on the host ("host") or on a device ("device"), engines included."""
    wanted = ("host", "any", "built") if where == "host" else ("any", "built")
    return [a for a in ARTIFACTS if a.bench in wanted and not per_file(a.id)]
