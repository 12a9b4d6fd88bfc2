"""Plain names: what a device, a device kind's file or a stage may be called where the name becomes one path
component (bench/<name>.json, tensorrt/<name>/). Python 3.8, stdlib only: the host and the device share it."""

import re

PLAIN_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}"
"""1-64 letters, digits, '_', '.' or '-', not starting with '.' or '-': no separators, never `.` or `..`."""

_PLAIN = re.compile(PLAIN_NAME)


def is_plain_name(value: object) -> bool:
    """True when `value` is a string that is a plain name as a whole (a trailing newline is not)."""
    return isinstance(value, str) and _PLAIN.fullmatch(value) is not None
