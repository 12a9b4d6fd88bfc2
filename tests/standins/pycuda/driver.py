"""pycuda.driver, as far as edgekd/ondevice uses it, with host numpy memory as "device" memory.

Names and signatures are pycuda's (init, Device, Context, Stream, Event, mem_alloc, memcpy_*,
pagelocked_empty, device_attribute). Copies are synchronous, so a Stream has nothing to wait for
and an Event pair measures host wall-clock time, which is why nothing timed here is a GPU figure.
What pycuda refuses is refused here too: copies past the end of an allocation, use of freed memory,
popping an empty context stack, and leaving a context pushed at exit (pycuda aborts the process then).
"""

import atexit
import os
import sys
import time

import numpy as np

__all__ = [
    "Context",
    "Device",
    "DeviceAllocation",
    "Error",
    "Event",
    "LogicError",
    "Stream",
    "device_attribute",
    "init",
    "mem_alloc",
    "memcpy_dtoh",
    "memcpy_dtoh_async",
    "memcpy_htod",
    "memcpy_htod_async",
    "pagelocked_empty",
]


class Error(Exception):
    pass


class LogicError(Error):
    pass


_INITIALISED = []
_MEMORY = {}  # address -> uint8 array: the "device" allocations
_NEXT = [0x7F0000000000]
_CONTEXT_STACK = []

GPU_NAME = "tensorrt-standin host CPU"
COMPUTE_CAPABILITY = (7, 2)  # what an AGX Xavier reports
SM_COUNT = 8


def init(flags=0):
    _INITIALISED.append(True)


def _require_init():
    if not _INITIALISED:
        raise LogicError("cuInit failed: not initialized (call pycuda.driver.init() first)")


class device_attribute:
    MULTIPROCESSOR_COUNT = "MULTIPROCESSOR_COUNT"


class Context:
    def push(self):
        _CONTEXT_STACK.append(self)

    @staticmethod
    def pop():
        if not _CONTEXT_STACK:
            raise LogicError("cuCtxPopCurrent failed: invalid device context (the context stack is empty)")
        _CONTEXT_STACK.pop()

    def detach(self):
        pass

    @staticmethod
    def get_current():
        return _CONTEXT_STACK[-1] if _CONTEXT_STACK else None


class Device:
    def __init__(self, number):
        _require_init()
        if number != 0:
            raise LogicError(f"cuDeviceGet failed: invalid device ordinal {number}")
        self.number = number

    @staticmethod
    def count():
        _require_init()
        return 1

    def name(self):
        return GPU_NAME

    def compute_capability(self):
        return COMPUTE_CAPABILITY

    def get_attribute(self, attr):
        if attr == device_attribute.MULTIPROCESSOR_COUNT:
            return SM_COUNT
        raise LogicError(f"device attribute {attr!r} is not in the stand-in")

    def retain_primary_context(self):
        return Context()


def _current():
    if not _CONTEXT_STACK:
        raise LogicError("cuMemAlloc failed: invalid device context (no context is current)")


class DeviceAllocation:
    def __init__(self, nbytes):
        _current()
        self.address = _NEXT[0]
        _NEXT[0] += (int(nbytes) + 255) // 256 * 256 + 256
        _MEMORY[self.address] = np.zeros(int(nbytes), dtype=np.uint8)

    def __int__(self):
        return self.address

    __index__ = __int__

    def free(self):
        _MEMORY.pop(self.address, None)


def mem_alloc(bytesize):
    if int(bytesize) <= 0:
        raise LogicError("cuMemAlloc failed: invalid argument (size 0)")
    return DeviceAllocation(bytesize)


def device_memory(address, nbytes):
    """The uint8 view of `nbytes` of "device" memory at `address` (the TensorRT stand-in reads and writes here).

    LogicError, as an illegal address is on a GPU, when the range is not inside one live allocation.
    """
    address = int(address)
    for start, block in _MEMORY.items():
        if start <= address < start + len(block):
            offset = address - start
            if offset + nbytes > len(block):
                raise LogicError(
                    f"an illegal memory access was encountered: {nbytes} bytes at +{offset} of a {len(block)}-byte allocation"
                )
            return block[offset : offset + nbytes]
    raise LogicError(f"an illegal memory access was encountered: address {address:#x} is not allocated")


def _host_bytes(array):
    array = np.asarray(array)
    if not array.flags.c_contiguous:
        raise LogicError("host buffer must be contiguous")
    return array.reshape(-1).view(np.uint8)


def memcpy_htod(dest, src):
    data = _host_bytes(src)
    device_memory(dest, data.nbytes)[:] = data


def memcpy_dtoh(dest, src):
    out = _host_bytes(dest)
    out[:] = device_memory(src, out.nbytes)


def memcpy_htod_async(dest, src, stream=None):
    memcpy_htod(dest, src)


def memcpy_dtoh_async(dest, src, stream=None):
    memcpy_dtoh(dest, src)


def pagelocked_empty(shape, dtype, order="C", mem_flags=0):
    return np.empty(shape, dtype=dtype, order=order)


class Stream:
    _handles = [0x5000]

    def __init__(self, flags=0):
        _current()
        self._handles[0] += 16
        self.handle = self._handles[0]

    def synchronize(self):
        pass

    def is_done(self):
        return True


class Event:
    def __init__(self, flags=0):
        self.time = None

    def record(self, stream=None):
        self.time = time.perf_counter()
        return self

    def synchronize(self):
        return self

    def query(self):
        return True

    def time_since(self, event):
        if self.time is None or event.time is None:
            raise LogicError("cuEventElapsedTime failed: an event was never recorded")
        return (self.time - event.time) * 1000.0

    def time_till(self, event):
        return event.time_since(self)


@atexit.register
def _check_context_stack():
    if _CONTEXT_STACK:
        sys.stderr.write(
            "PyCUDA ERROR: The context stack was not empty upon module cleanup.\n"
            "-------------------------------------------------------------------\n"
            "A context was still active when the context stack was being\ncleaned up.\n"
        )
        sys.stderr.flush()
        os._exit(134)  # pycuda calls abort() here
