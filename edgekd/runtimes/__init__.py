"""Backends behind one small interface (load, run, describe): PyTorch eager, TorchScript, ONNX Runtime, TensorRT."""

from edgekd.runtimes.base import Runtime, Timer, backend_for, runtime_for

__all__ = ["Runtime", "Timer", "backend_for", "runtime_for"]
