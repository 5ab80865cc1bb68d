"""A command's log file in its output folder (``run.log``, ``tune.log``): what the command printed, its progress as
plain lines (also while a terminal shows bars), and how it ended, so that a run left overnight or shared says what
happened without a ``> file`` redirect."""

from __future__ import annotations

import io
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from hacknip.workflow.provenance import without_passwords

TERMINAL_CODES = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
"""Colours and cursor moves (ANSI escape sequences): the terminal's, not the log's."""

_active: _LogFile | None = None


class _LogFile:
    """The log, opened (with its folder, and a first line naming the command and when it started) on the first text
    written: a command refused before it printed anything leaves no folder behind."""

    def __init__(self, path: Path, command: str | None) -> None:
        self.path, self.command, self.file = path, command, None
        self.started, self.ended = time.monotonic(), False

    def write(self, text: str) -> None:
        if self.ended:  # a library that kept sys.stderr (a logging handler) writes on after the command
            return
        if self.file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 (closed by command_log)
            self.file.write(f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}: {self.command or 'hacknip'}\n")
        self.file.write(without_passwords(text))  # a log is shared like results.json
        self.file.flush()  # on disk at once: a killed run keeps its log, and a forked process has no copy to repeat

    def flush(self) -> None:
        if self.file is not None and not self.ended:
            self.file.flush()

    def end(self, how: str, reason: str = "") -> None:
        """The last line, when there is a log: ``how`` the command ended (``"finished in"``), after how long, and
        why it stopped."""
        if self.file is not None:
            self.write(f"{how} {time.monotonic() - self.started:.0f} s" + (f": {reason}" if reason else "") + "\n")

    def close(self) -> None:
        self.ended = True
        if self.file is not None:
            self.file.close()


class _Copied(io.TextIOBase):
    """A text stream writing to ``stream`` and, without terminal codes, to ``log``; a terminal stays a terminal."""

    def __init__(self, stream: TextIO, log: _LogFile) -> None:
        self.stream, self.log = stream, log

    def write(self, text: str) -> int:
        self.stream.write(text)
        self.log.write(TERMINAL_CODES.sub("", text))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()
        self.log.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:
        return getattr(self.stream, "encoding", None) or "utf-8"


def active_log() -> _LogFile | None:
    """The log file of the command running now, if it keeps one."""
    return _active


def terminal(stream: TextIO) -> TextIO:
    """``stream`` without its copy to the log: where a live progress display draws (its redraws are not log lines)."""
    return stream.stream if isinstance(stream, _Copied) else stream


def note(text: str) -> None:
    """Write ``text`` to the log when standard error is not copied there already (a live progress display takes it
    over while it draws)."""
    if _active is not None and not isinstance(sys.stderr, _Copied):
        _active.write(text.rstrip("\n") + "\n")


@contextmanager
def command_log(path: Path, command: str | None) -> Iterator[None]:
    """While the block runs, everything printed also goes to ``path`` (begun anew when the first text comes), and a
    last line says how it ended (finished, interrupted, or the error)."""
    global _active
    log = _LogFile(path, command)
    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout, sys.stderr, _active = _Copied(stdout, log), _Copied(stderr, log), log
    try:
        yield
    except KeyboardInterrupt:
        log.end("interrupted after")
        raise
    except Exception as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        log.end("stopped after", reason)
        raise
    else:
        log.end("finished in")
    finally:
        sys.stdout, sys.stderr, _active = stdout, stderr, None
        log.close()
