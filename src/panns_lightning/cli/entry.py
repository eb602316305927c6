"""What every console script shares, whatever parses its arguments (argparse or Hydra).

:func:`console_entry` wraps a script's ``main``: everything it prints goes through the redacting
console (``redact.redacted_console``: no credential reaches the terminal, whoever prints it), and
a reader that goes away (``panns-tag a.wav b.wav | head -1``) ends the script quietly with exit
code 0 instead of a ``BrokenPipeError`` traceback. :func:`one_line` is how an error a user can
fix is shown: one line, even when a DataLoader worker raised it.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from panns_lightning.cli.library_noise import silence_known_harmless
from panns_lightning.redact import redact, redacted_console

F = TypeVar("F", bound=Callable[..., Any])
EXIT_CLOSED_PIPE = 0
"""The reader asked for no more (``| head``): what it got is what it wanted, so no failure."""
# What torch's DataLoader makes of an exception raised in a worker: its message becomes
# "Caught X in DataLoader worker process N.\nOriginal Traceback ...\n<module>.X: message".
_WORKER_TRACEBACK = "\nOriginal Traceback (most recent call last):"
_EXCEPTION_PREFIX = re.compile(r"^[A-Za-z_][\w.]*: ")


def console_entry(main: F) -> F:
    """Decorate a console script's ``main``: a redacted console without known-harmless library lines,
    and a closed pipe ends it quietly."""

    @functools.wraps(main)
    def run(*args: Any, **kwargs: Any) -> Any:
        silence_known_harmless()  # library lines that are only noise here (cli/library_noise.py says why)
        with redacted_console():
            try:
                return main(*args, **kwargs)
            except BrokenPipeError:
                return end_on_closed_pipe()

    return run  # type: ignore[return-value]


def end_on_closed_pipe() -> int:
    """After a ``BrokenPipeError`` on stdout: send the rest to /dev/null (Python flushes stdout at
    exit, which would raise again) and return :data:`EXIT_CLOSED_PIPE`."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)
    return EXIT_CLOSED_PIPE


def one_line(command: str, error: BaseException) -> str:
    """``"command: message"`` on one line with secrets masked; an error re-raised from a DataLoader
    worker is shown by its original message, not the worker's traceback."""
    text = str(error)
    if _WORKER_TRACEBACK in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = _EXCEPTION_PREFIX.sub("", last, count=1)
    return redact(f"{command}: {' '.join(text.split()) or type(error).__name__}")
