"""The ``hacknip`` command line: :mod:`hacknip.cli.main` (the commands), :mod:`hacknip.cli.common` (what
they share), :mod:`hacknip.cli.analyze` and :mod:`hacknip.cli.report`."""

from hacknip.cli.main import cli, main

__all__ = ["cli", "main"]
