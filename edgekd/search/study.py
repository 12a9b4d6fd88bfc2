"""Distill sweeps as Optuna studies: samplers, a pruner fed each epoch's selection score, a storage many workers
share, and a heartbeat so a trial whose worker died is marked failed and retried with the same settings.

The trainer is the caller's: `work(study, n, train)` runs trials until the study has `n` finished (complete or
pruned) ones, each by calling `train(TrialPlan)`; every process that calls it against the same storage and study
name is one more worker. Optuna is used the way its own examples use it; nothing here samples or prunes by hand.
"""

from __future__ import annotations

import contextlib
import datetime
import inspect
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekd.config import SearchRange, SweepConfig, search_type
from edgekd.errors import EdgekdError
from edgekd.ondevice.text import first_line
from edgekd.run_records import SweepTrial

SCHEMES = ("sqlite", "postgresql", "mysql", "journal")
JOURNAL = "journal://"
HEARTBEAT_FIELDS = ("max_retry", "heartbeat_seconds")


def optuna_module() -> Any:
    """Optuna, or the one-line error that says how to get it."""
    try:
        import optuna
    except ImportError:
        raise EdgekdError(
            "sweep: needs Optuna, which is not installed; pip install 'edgekd[sweep]' (or pip install optuna)"
        ) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def _retry_callback() -> Any:
    """Optuna's callback that re-queues a trial failed by its stale heartbeat (renamed in Optuna 4.9)."""
    storages = optuna_module().storages
    return getattr(storages, "RetryHeartbeatStaleTrialCallback", None) or storages.RetryFailedTrialCallback


def _retry_of(frozen: Any) -> int | None:
    return frozen.system_attrs.get("failed_trial")


def shown(url: str) -> str:
    """A storage URL fit to print: the password replaced by ***."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL sqlalchemy parses: show the scheme only
        return url.split("://", 1)[0] + "://..."


def check_storage(url: str, sweep: SweepConfig) -> str:
    """The storage URL's scheme, once the URL is one edgekd can open with this sweep section: a database URL, or a
    journal file, `journal:///ABS/PATH`, in an existing folder (Optuna's JournalStorage, with its NFS-safe
    lock). A journal has no heartbeats (Optuna <= 5.1): the sweep fields that rely on them are refused."""
    scheme = url.split("://", 1)[0].split("+", 1)[0] if "://" in url else ""
    if scheme not in SCHEMES:
        raise EdgekdError(
            f"--storage {shown(url) if scheme else '(not a URL)'}: not a storage URL; use sqlite:///PATH, "
            "postgresql://USER:PASSWORD@HOST/DB, mysql://USER:PASSWORD@HOST/DB or journal:///ABS/PATH/study.log"
        )
    if scheme != "journal":
        return scheme
    path = Path(url.removeprefix(JOURNAL))
    if not path.is_absolute():
        raise EdgekdError(
            f"--storage {url}: a journal file needs an absolute path that every worker sees alike, "
            "journal:///ABS/PATH/study.log (three slashes)"
        )
    if not path.parent.is_dir():
        raise EdgekdError(
            f"--storage {url}: folder {path.parent} does not exist; create it on the filesystem every worker mounts"
        )
    if path.exists() and not path.is_file():
        raise EdgekdError(f"--storage {url}: {path} is not a regular file; name the study's journal file")
    if given := [name for name in HEARTBEAT_FIELDS if name in sweep.model_fields_set]:
        raise EdgekdError(
            f"sweep.{given[0]}: a journal storage has no heartbeats, so a dead worker's trial is neither found nor "
            f"retried (docs/sweeps.md); drop sweep.{given[0]} or use a database URL for --storage"
        )
    return scheme


def open_storage(url: str | None, default_db: Path, sweep: SweepConfig) -> Any:
    """The study's Optuna storage: an RDB storage with heartbeats for `url` (another worker's database) or the
    SQLite file `default_db`; a JournalStorage for `journal:///ABS/PATH` (see `check_storage`)."""
    optuna = optuna_module()
    if url is None:
        default_db.parent.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{default_db}"
    scheme = check_storage(url, sweep)
    if scheme == "journal":
        try:
            return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(url.removeprefix(JOURNAL)))
        except OSError as e:  # unwritable, or the filesystem refuses the lock's symlink
            raise EdgekdError(
                f"--storage {url}: cannot open the journal file ({type(e).__name__}: {first_line(e)})"
            ) from None
    callback = _retry_callback()(max_retry=sweep.max_retry)
    new_name = "heartbeat_stale_trial_callback" in inspect.signature(optuna.storages.RDBStorage).parameters
    try:
        return optuna.storages.RDBStorage(
            url,
            heartbeat_interval=sweep.heartbeat_seconds,
            grace_period=2 * sweep.heartbeat_seconds,
            **{"heartbeat_stale_trial_callback" if new_name else "failed_trial_callback": callback},
            engine_kwargs={"pool_pre_ping": True} if scheme != "sqlite" else {"connect_args": {"timeout": 60}},
        )
    except Exception as e:  # sqlalchemy's errors, a missing driver (psycopg2)
        why = first_line(e).replace(url, shown(url))
        raise EdgekdError(
            f"--storage {shown(url)}: cannot open the study storage ({type(e).__name__}: {why})"
        ) from None


def stalled_hint(url: str | None, study: str) -> str | None:
    """What to do about a trial whose worker died where the storage cannot tell (a journal has no heartbeats)."""
    if url is None or not url.startswith(JOURNAL):
        return None
    return (
        "a journal storage has no heartbeats: if one of those workers died, end its trial with "
        f"`optuna tell --storage {url.removeprefix(JOURNAL)} --study-name {study} --trial-number N --state fail`"
    )


def make_sampler(sweep: SweepConfig, seed: int) -> Any:
    optuna = optuna_module()
    space = sweep.search_space
    if sweep.sampler == "grid":
        return optuna.samplers.GridSampler({k: list(v) for k, v in space.items()}, seed=seed)
    if sweep.sampler == "tpe":  # random for the first third of the trials (at most 10), then TPE
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, sweep.n_trials // 3)))
    return optuna.samplers.RandomSampler(seed=seed)


def make_pruner(sweep: SweepConfig) -> Any:
    optuna = optuna_module()
    if sweep.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=sweep.pruner_startup_trials, n_warmup_steps=0)
    return optuna.pruners.NopPruner()


def open_study(name: str, storage: Any, sweep: SweepConfig, seed: int) -> Any:
    """The study `name` in `storage`, created by whichever worker comes first; maximises the selection top-1."""
    optuna = optuna_module()
    return optuna.create_study(
        study_name=name,
        storage=storage,
        sampler=make_sampler(sweep, seed),
        pruner=make_pruner(sweep),
        direction="maximize",
        load_if_exists=True,
    )


def trial_seed(seed: int, number: int) -> int:
    """The seed of trial `number` (a retried trial keeps the seed of the trial it retries)."""
    return (seed * 1_000_003 + 7919 * (number + 1)) % 2**31


@dataclass
class TrialPlan:
    """What one trial trains with: its number, settings, seed, and `report(epoch, score)` for the pruner."""

    number: int
    settings: dict[str, float]
    seed: int
    retry_of: int | None
    report: Callable[[int, float], None]


@dataclass
class TrialOutcome:
    selection_top1: float
    selection_kl: float | None
    val_top1: float | None
    epochs: int


def suggest(trial: Any, sweep: SweepConfig) -> dict[str, float]:
    """The trial's settings, asked of the sampler (a retried trial gets the settings of the one it retries)."""
    out: dict[str, float] = {}
    for name, values in sweep.search_space.items():
        kind = search_type(name)
        if isinstance(values, SearchRange):
            if kind is int:
                out[name] = trial.suggest_int(name, int(values.low), int(values.high), log=values.log)
            else:
                out[name] = trial.suggest_float(name, values.low, values.high, log=values.log)
        else:
            out[name] = kind(trial.suggest_categorical(name, list(values)))
    return out


def work(
    study: Any,
    sweep: SweepConfig,
    seed: int,
    train: Callable[[TrialPlan], TrialOutcome],
    record: Callable[[SweepTrial], None],
    log: Callable[[str], None],
    poll_seconds: float = 1.0,
    stalled: str | None = None,
    idle: Callable[[], None] | None = None,
) -> None:
    """Run trials until `study` has `sweep.n_trials` finished ones (complete or pruned); other workers may run
    some. While the trials still to finish are all running elsewhere, wait for them (a dead worker's trial is
    failed by its stale heartbeat, and retried; without heartbeats the log says what to do: `stalled`), calling
    `idle()` at each poll (under torchrun: the other ranks hear from rank 0 before their collective times out)."""
    optuna = optuna_module()
    States = optuna.trial.TrialState

    def objective(trial: Any) -> float:
        trials = study.get_trials(deepcopy=False)
        if _surplus(trials, trial.number, sweep.n_trials):
            trial.set_user_attr("surplus", True)
            raise optuna.TrialPruned("surplus: lower-numbered trials finish the study")
        settings = suggest(trial, sweep)
        retry_of = next((_retry_of(t) for t in trials if t.number == trial.number), None)
        plan_seed = trial_seed(seed, trial.number if retry_of is None else retry_of)
        trial.set_user_attr("seed", plan_seed)
        trial.set_user_attr("worker", f"{os.uname().nodename}:{os.getpid()}")
        epochs = 0

        def report(epoch: int, score: float) -> None:
            nonlocal epochs
            epochs = epoch
            trial.report(score, epoch)
            if trial.should_prune():
                record(SweepTrial(trial.number, settings, plan_seed, "pruned", score, None, None, epoch, retry_of))
                raise optuna.TrialPruned(f"selection top-1 {score:.2f}% after epoch {epoch}")

        log(f"  distill sweep: trial {trial.number} {settings} (seed {plan_seed})")
        out = train(TrialPlan(trial.number, settings, plan_seed, retry_of, report))
        for k, v in (("selection_kl", out.selection_kl), ("val_top1", out.val_top1), ("epochs", out.epochs)):
            trial.set_user_attr(k, v)
        record(
            SweepTrial(
                trial.number,
                settings,
                plan_seed,
                "complete",
                out.selection_top1,
                out.selection_kl,
                out.val_top1,
                out.epochs,
                retry_of,
            )
        )
        return out.selection_top1

    awaited: list[int] = []
    while True:
        optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        finished = sum(t.state in (States.COMPLETE, States.PRUNED) and not t.user_attrs.get("surplus") for t in trials)
        running = [t for t in trials if t.state == States.RUNNING]
        waiting = sum(t.state == States.WAITING for t in trials)
        if finished >= sweep.n_trials:
            return
        if not waiting and finished + len(running) >= sweep.n_trials:
            if awaited != [t.number for t in running]:  # said once per set of trials awaited
                awaited = [t.number for t in running]
                workers = ", ".join(str(t.user_attrs.get("worker", "starting")) for t in running)
                hint = f"; {stalled}" if stalled else ""
                log(f"  distill sweep: waiting for trials {awaited} on other workers ({workers}){hint}")
            _fail_unstarted(study, trials, 4 * sweep.heartbeat_seconds)
            if idle is not None:
                idle()
            time.sleep(poll_seconds)  # the last trials run on other workers
            continue
        study.optimize(objective, n_trials=1, catch=())


def _surplus(trials: list, number: int, n_trials: int) -> bool:
    """Whether the study's `trials` numbered below `number` already finish it (finished, running elsewhere, or
    waiting: a failed trial's retry that another worker queued, which the next `optimize` pops). Two workers
    that both saw room for one more trial each start one; the storage numbers trials in order, so the later one
    stands down (pruned, marked `surplus`, never trained nor counted) and the study ends with exactly
    `n_trials`, as Optuna's own MaxTrialsCallback would not guarantee."""
    States = optuna_module().trial.TrialState
    counted = (States.COMPLETE, States.PRUNED, States.RUNNING, States.WAITING)
    lower = [t for t in trials if t.number < number and not t.user_attrs.get("surplus")]
    return sum(t.state in counted for t in lower) >= n_trials


def _fail_unstarted(study: Any, trials: list, after_s: float) -> None:
    """Fail the running trials whose worker died between creating them and their first heartbeat (Optuna's
    heartbeat check skips a trial that never sent one, so the study would wait for it forever). Such a trial
    never reached the objective, which records its worker first: nothing was trained, nothing to retry."""
    States = optuna_module().trial.TrialState
    now = datetime.datetime.now()
    for t in trials:
        started = t.datetime_start
        if (
            t.state == States.RUNNING
            and "worker" not in t.user_attrs
            and started
            and (now - started).total_seconds() > after_s
        ):
            with contextlib.suppress(Exception):  # another worker may fail it first
                study.tell(t.number, state=States.FAIL)


def trials_of(study: Any) -> list[SweepTrial]:
    """Every finished trial of the study as a typed record (whichever worker ran it), by trial number; surplus
    trials (stood down untrained, `_surplus`) are left out."""
    optuna = optuna_module()
    States = optuna.trial.TrialState
    out = []
    for t in study.get_trials(deepcopy=False):
        state = {States.COMPLETE: "complete", States.PRUNED: "pruned", States.FAIL: "failed"}.get(t.state)
        if state is None or t.user_attrs.get("surplus"):
            continue
        attrs = t.user_attrs
        last = max(t.intermediate_values) if t.intermediate_values else None
        top1 = t.value if t.state == States.COMPLETE else (t.intermediate_values[last] if last else None)
        settings = {k: search_type(k)(v) for k, v in t.params.items()}
        out.append(
            SweepTrial(
                t.number,
                settings,
                int(attrs.get("seed", 0)),
                state,
                top1,
                attrs.get("selection_kl"),
                attrs.get("val_top1"),
                int(attrs.get("epochs", last or 0)),
                _retry_of(t),
            )
        )
    return sorted(out, key=lambda t: t.number)


def best_of(trials: list[SweepTrial]) -> SweepTrial:
    """The winner: the highest selection top-1 among complete trials; ties go to the lower KL to the teacher,
    then to the earlier trial."""
    done = [t for t in trials if t.state == "complete" and t.selection_top1 is not None]
    if not done:
        raise EdgekdError("sweep: no trial completed (every one was pruned or failed); see the distill log")
    kl = lambda t: t.selection_kl if t.selection_kl is not None else float("inf")  # noqa: E731
    return min(done, key=lambda t: (-(t.selection_top1 or 0.0), kl(t), t.number))


def importances(study: Any) -> dict[str, float]:
    """Each searched setting's share of the selection score's variance across the complete trials (Optuna's
    fANOVA importance), most important first; {} when the trials are too few or too alike to say."""
    optuna = optuna_module()
    try:
        found = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError, ZeroDivisionError):
        return {}
    return {k: float(v) for k, v in found.items()}
