"""A real run shipped to a real sshd and benchmarked there: one vocabulary on host and device, one reference."""

from __future__ import annotations

import pytest

from edgekd.config import BudgetConfig, load_pipeline
from edgekd.fleet.ship import ship
from edgekd.ondevice import catalog
from edgekd.pipeline import Runner
from edgekd.report.write import write_report
from edgekd.stages import all_stages

pytestmark = [pytest.mark.slow, pytest.mark.ssh]

EXTRA = "qat:\n  enabled: false\n"  # a near-chance tiny QAT student can miss its own parity gate; not what this tests


def test_host_and_device_reports_share_ids_threads_and_reference(tiny_pipeline, sshd, isolated_python, tmp_path):
    run_dir = tmp_path / "run"
    manifest = Runner(load_pipeline(tiny_pipeline(distill_epochs=1, extra=EXTRA)), all_stages(), run_dir).run()
    assert manifest.stage("benchmark").to_dict()["status"] == "done"
    device = sshd.device(tmp_path / "remote", isolated_python, ["onnxruntime"])
    result = ship(run_dir, device)

    shipped = {a["id"] for a in result.artifacts}
    onnx_rows = {a.id for a in catalog.ARTIFACTS if a.runtime == "onnxruntime" and a.ships}
    assert shipped and shipped <= onnx_rows  # the device names them by catalogue id, as the host does

    files = write_report([run_dir], run_dir / "report", BudgetConfig())
    report = files.report
    assert [d.device for d in report.devices] == ["local", "loopback"]
    md = files.markdown.read_text()
    side = md[md.index("## Side by side") :].split("\n## ")[0]
    table = [line for line in side.splitlines() if line.startswith("|") and not line.startswith("|--")]
    ids = [line.split("|")[1].strip().strip("`") for line in table[1:]]
    assert len(ids) == len(set(ids))  # one row per artifact, never the same file twice under two names
    for art_id in shipped:  # measured on both: both cells filled
        row = table[1 + ids.index(art_id)]
        cells = [c.strip() for c in row.split("|")[2:-1]]
        assert all(c and c != "—" for c in cells), row
    assert md.count(f"Speed-up vs {catalog.REFERENCE}") == 1  # named once, in the summary, for every device
    assert "None" not in md
    for latency in md.split("### Latency")[1:]:  # each device's latency table: threads are numbers
        lines = [x for x in latency.split("\n\n")[1].splitlines() if x.startswith("|") and not x.startswith("|--")]
        header = [c.strip() for c in lines[0].split("|")[1:-1]]
        col = header.index("Threads")
        threads = [[c.strip() for c in x.split("|")[1:-1]][col] for x in lines[1:]]
        assert any(t.isdigit() for t in threads) and all(t.isdigit() or t == "—" for t in threads), threads
