"""Numbers and errors for people, shared by the status page, `linelight status`, the log."""

from __future__ import annotations

from typing import Any


def format_age(seconds: Any) -> str:
    """An age for people: `350 ms`, `12.0 s`, `3.5 min`, `2.0 h`, `3.0 days`; `-` if unknown."""
    if not isinstance(seconds, int | float):
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def describe_error(exc: BaseException) -> str:
    """`Type: sentence` of the exception that actually went wrong.

    A task group wraps a failure as `ExceptionGroup: unhandled errors in a TaskGroup (1
    sub-exception)`, which says nothing; the innermost exception's sentence does. Several
    failures show the first and how many more.
    """
    leaves = list(_leaves(exc))
    first = leaves[0]
    text = f"{type(first).__name__}: {first}" if str(first) else type(first).__name__
    return text + (f" (and {len(leaves) - 1} more)" if len(leaves) > 1 else "")


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]
