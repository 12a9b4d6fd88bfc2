"""The runtime interface every backend follows, on the host and on the device (Python 3.8, stdlib only).

Like Polygraphy's runners: constructing a runtime only records what to load; `load()` does the
work (sessions, engines, GPU buffers); `close()` releases whatever `load()` got this far and may
be called any number of times, also after a failed `load()`. A runtime is a context manager:

    with OrtRuntime(path, providers, threads) as rt:      # __enter__ loads
        logits = rt.run(batch)

The benchmark does the same by hand (load, measure, close in `finally`) so that a failing load
still releases what it took. Subclasses implement `_load`, `run`, `describe` and `_release`.
"""

from typing import Any, Callable, Dict, Optional

Timer = Callable[[Callable[[], object]], float]
"""Times one call of a zero-argument function, in milliseconds (GPU backends synchronise the device)."""


class Runtime:
    """A model that maps an NCHW float32 batch (numpy) to float32 logits.

    After `load()`: `fixed_batch` is the only batch size a static-shape artifact accepts (else
    None); `min_batch`/`max_batch` bound a dynamic one (max None: unbounded); `timer` is None
    when wall-clock timing around the prepared call is exact, else a device-synchronised Timer; `compute_ms`,
    where a runtime has it, collects the device's own compute time of each prepared call (TensorRT's GPU
    compute time), an extra figure beside the wall-clock latency.
    """

    name = ""
    fixed_batch = None  # type: Optional[int]
    min_batch = 1
    max_batch = None  # type: Optional[int]
    timer = None  # type: Optional[Timer]
    compute_ms = None  # type: Optional[List[float]]

    def __init__(self) -> None:
        self.loaded = False
        self.closed = False

    def load(self) -> "Runtime":
        """Load the model; a failure leaves the runtime to be closed like any other."""
        if self.closed:
            raise RuntimeError(f"{self.name} runtime: load() after close()")
        if not self.loaded:
            self._load()
            self.loaded = True
        return self

    def close(self) -> None:
        """Release everything `load()` took (also after a failed load); later calls do nothing."""
        if self.closed:
            return
        self.closed = True
        self._release()

    def __enter__(self) -> "Runtime":
        try:
            return self.load()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def accepts(self, batch_size: int) -> bool:
        """Whether this artifact can run a batch of `batch_size`."""
        if self.fixed_batch is not None:
            return batch_size == self.fixed_batch
        return self.min_batch <= batch_size <= (self.max_batch or batch_size)

    def run(self, batch: Any) -> Any:
        """Logits of an NCHW float32 batch, as a float32 numpy array on the host."""
        raise NotImplementedError

    def prepare(self, batch: Any) -> Callable[[], object]:
        """A zero-argument call that runs `batch` with inputs converted (and copied to the device) beforehand."""
        return lambda: self.run(batch)

    def describe(self) -> Dict[str, Any]:
        """The bench record's `runtime`: name, version, provider, and the threads it really uses (a number)."""
        raise NotImplementedError

    def _load(self) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        raise NotImplementedError


def resolve_threads(threads: Optional[int]) -> int:
    """The CPU threads a runtime is given (a number, so records say what ran): the number asked for, else
    OMP_NUM_THREADS where the environment limits the process's threads, else every core."""
    import os

    if threads:
        return int(threads)
    limit = os.environ.get("OMP_NUM_THREADS", "")
    return int(limit) if limit.isdigit() and int(limit) > 0 else (os.cpu_count() or 1)
