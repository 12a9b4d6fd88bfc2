"""Two workers that both saw room for the study's last trial each start one: the later-numbered stands down."""

import optuna

from edgekd.search.study import _surplus


def test_the_later_of_two_racing_trials_stands_down_and_a_failed_one_leaves_room():
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    for value in (1.0, 2.0):
        study.tell(study.ask(), value)
    first, second = study.ask(), study.ask()  # both started while two of three trials had finished
    assert not _surplus(study.get_trials(), first.number, 3)
    assert _surplus(study.get_trials(), second.number, 3)
    study.tell(first, state=optuna.trial.TrialState.FAIL)  # its worker died: the study needs another trial
    assert not _surplus(study.get_trials(), second.number, 3)
    second.set_user_attr("surplus", True)  # a trial that stood down is not counted for a later one
    study.tell(second, state=optuna.trial.TrialState.PRUNED)
    assert not _surplus(study.get_trials(), study.ask().number, 3)
