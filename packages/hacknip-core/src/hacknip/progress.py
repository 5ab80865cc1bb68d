"""How library code reports progress without drawing anything: it takes a ``progress`` callable, which the CLI
implements with bars (or plain lines in a log) and which defaults to :func:`no_progress`."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str, int], Callable[[int], None]]
"""Makes a progress task: ``start(description, total)`` returns ``advance(n)``."""


def no_progress(description: str, total: int) -> Callable[[int], None]:
    return lambda n=1: None
