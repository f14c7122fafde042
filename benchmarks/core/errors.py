"""How the harness tells a person about an error: in one line, and bad input with exit status 2.

Apart from the command frame (:mod:`benchmarks.core.cli`) so that any module may use it without
importing the frame and what the frame imports.
"""

from __future__ import annotations

USAGE_ERROR = 2


class UsageError(Exception):
    """Bad input, or a state the command cannot use (a results folder it cannot write, a child
    process that died): told in one line, exit status 2."""


def one_line(e: BaseException) -> str:
    """An exception as one line for a person: ``Type: the first line of its message`` (the type
    alone where the message is empty), so that a row's ``reason`` or an error never spans lines."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__
