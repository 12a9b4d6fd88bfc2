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


def test_a_retry_queued_by_another_worker_counts_for_a_trial_created_after_it():
    """Worker B fails a dead worker's trial and queues its retry (WAITING) just after worker C found nothing
    waiting and went on to create a new trial: C's trial is surplus, the retry finishes the study (a CI run
    trained both and ended with one trial too many)."""
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    for value in (1.0, 2.0):
        study.tell(study.ask(), value)
    dead = study.ask()
    study.tell(dead, state=optuna.trial.TrialState.FAIL)
    study.enqueue_trial(dead.params)  # what RetryFailedTrialCallback does: a WAITING trial, numbered next
    fresh = study._storage.create_new_trial(study._study_id)  # C's trial: created without popping the retry
    number = study._storage.get_trial(fresh).number
    assert [t.state.name for t in study.get_trials()][-2:] == ["WAITING", "RUNNING"]
    assert _surplus(study.get_trials(), number, 3)
