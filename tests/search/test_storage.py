"""The sweep's storage URL: a database, or a journal file on a shared filesystem (`journal:///ABS/PATH`); a URL
edgekd cannot use is a one-line error before any stage runs."""

import pytest

from edgekd.config import SweepConfig
from edgekd.errors import EdgekdError
from edgekd.search.study import check_storage, open_storage, open_study, optuna_module

SWEEP = SweepConfig(temperature=[2, 8])


def _refused(url: str, sweep: SweepConfig = SWEEP) -> str:
    with pytest.raises(EdgekdError) as e:
        check_storage(url, sweep)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_a_journal_file_is_a_study_storage_every_opener_shares(tmp_path):
    url = f"journal://{tmp_path / 'study.log'}"
    first = open_study("s", open_storage(url, tmp_path / "unused.db", SWEEP), SWEEP, 0)
    first.tell(first.ask({"temperature": optuna_module().distributions.CategoricalDistribution([2.0, 8.0])}), 1.0)
    again = open_study("s", open_storage(url, tmp_path / "unused.db", SWEEP), SWEEP, 1)  # another worker's view
    assert [t.params for t in again.get_trials()] == [t.params for t in first.get_trials()]
    assert not (tmp_path / "unused.db").exists()


def test_a_journal_path_edgekd_cannot_use_is_one_line(tmp_path):
    missing = tmp_path / "absent" / "study.log"
    assert f"folder {missing.parent} does not exist" in _refused(f"journal://{missing}")
    assert "journal:///ABS/PATH/study.log (three slashes)" in _refused("journal://runs/study.log")
    assert "is not a regular file" in _refused(f"journal://{tmp_path}")
    assert "journal:///ABS/PATH" in _refused("redis://localhost/0")
    for field in ("max_retry", "heartbeat_seconds"):  # what only heartbeats can do: refused on a journal
        sweep = SweepConfig(temperature=[2, 8], **{field: 3})
        assert _refused(f"journal://{tmp_path / 'study.log'}", sweep).startswith(f"sweep.{field}: a journal storage")
        assert check_storage("sqlite:///study.db", sweep) == "sqlite"
