"""Progress bars and log lines on the console (Rich), shared by the runner and the training loops."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class Reporter:
    """Prints log lines and shows progress bars; `quiet` keeps only the log lines."""

    def __init__(self, console: Console | None = None, quiet: bool = False) -> None:
        self.console = console or Console(stderr=True)
        self.quiet = quiet

    def log(self, message: str) -> None:
        self.console.print(message, highlight=False)

    @contextmanager
    def task(self, description: str, total: int) -> Iterator[_Task]:
        if self.quiet or not self.console.is_terminal:
            yield _Task(None, None)
            return
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=self.console, transient=True) as bar:
            yield _Task(bar, bar.add_task(description, total=total))


class _Task:
    def __init__(self, bar: Progress | None, task_id: int | None) -> None:
        self.bar, self.task_id = bar, task_id

    def advance(self, n: int = 1, description: str | None = None) -> None:
        if self.bar is not None:
            self.bar.update(self.task_id, advance=n, description=description)
