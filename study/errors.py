"""A failure as rows, records and messages show it: plain text, the cause's type and message
first. Standard library only (the executor and `analysis` use it without torch)."""

from __future__ import annotations

import re
import traceback

_ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|[@-Z\\-_])")


def plain(text: str) -> str:
    """``text`` without ANSI escape sequences (colours, cursor moves)."""
    return _ANSI.sub("", text)


def error_text(e: BaseException, limit: int = 8) -> str:
    """A failure as a row stores it (``error``, a NaN reason): plain text, the cause's type and
    message on the first line, then the traceback (its last ``limit`` frames). A Ray task error
    is unwrapped to the exception the task raised, its text being the remote traceback."""
    cause = getattr(e, "cause", None)
    inner = cause if isinstance(cause, BaseException) else e
    head = f"{type(inner).__name__}: {inner}".replace("\n", " ").strip()
    trace = (str(e) if inner is not e
             else "".join(traceback.format_exception(type(e), e, e.__traceback__, limit=limit)))
    return plain(f"{head}\n{trace}").rstrip()


def error_line(e: BaseException) -> str:
    """A failure in one line, as a record or a summary shows it: ``Type: first line``."""
    text = str(e)
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"
