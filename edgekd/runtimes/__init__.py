"""Backends behind one interface (load, run, describe, close): PyTorch eager, TorchScript, ONNX Runtime, TensorRT."""

from edgekd.runtimes.base import Runtime, Timer, backend_for, open_runtime, runtime_for

__all__ = ["Runtime", "Timer", "backend_for", "open_runtime", "runtime_for"]
