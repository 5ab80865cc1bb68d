"""The errors hacknip raises for problems a user can fix.

The command line prints a :class:`HacknipError` as one line (its message names the file, row or field and says
what to do) and shows a traceback for anything else, since anything else is a bug to report. Each error here also
derives from the built-in type that code catching it would expect (``ValueError``, ``LookupError``).
"""

from __future__ import annotations


class HacknipError(Exception):
    """A problem with the user's input, files or settings; the message says what is wrong and what to do."""


class InputError(HacknipError, ValueError):
    """Bad input: a data file, a model folder, an option value or an expression."""


class BadStructureError(InputError):
    """A backbone cannot featurise this structure (an element it does not know, a graph it cannot build, ...).

    Backbones raise it for problems with the input structure; featurisation then names the row (or skips it with
    ``on_error="skip"``). Any other exception from a backbone is a bug and stops the run with its traceback."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, or SIGTERM through the command line, stopped a long step once it had kept what it finished; the
    message says what was kept and how to go on (the command line prints it as one line)."""


class UntrustedFileError(HacknipError):
    """A file named by another file (a model folder, a table) would be loaded in a way that can run code."""
