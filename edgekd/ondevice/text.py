"""Wording shared by every error message, on the host and on the device (Python 3.8, stdlib only)."""

import difflib
from typing import Iterable


def first_line(error: BaseException) -> str:
    """The first line of an error's message, or its type's name when it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def one_line(error: BaseException) -> str:
    """An error as one line, prefixed with its type unless it is a user error (EdgekdError) that already says it all."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if type(error).__name__ == "EdgekdError":
        return text
    return f"{type(error).__name__}: {text}".rstrip(": ")


def did_you_mean(word: str, choices: Iterable[str], n: int = 1, cutoff: float = 0.6, prefix: str = "") -> str:
    """`did you mean 'x'? ` for the nearest choices (`prefix` prepended to each), or "" when none is near."""
    near = difflib.get_close_matches(word, list(choices), n=n, cutoff=cutoff)
    return "did you mean {}? ".format(", ".join(f"'{prefix}{c}'" for c in near)) if near else ""
