"""Progress and status messages go through the standard `logging` module, under the `ulmfit_lab` logger.

Each module logs to `logging.getLogger(__name__)`; library code never decides where records go (the logging
HOWTO's rule for libraries: the package adds only a `NullHandler`). Whoever runs the program does: the
command line shows them with `console()`, `SentimentClassifier(verbose=True)` while it fits, a script or
notebook with `show_progress()`, and an application with its own logging config as it likes.

On the console a record reads `[ulmfit-lab] message` (`[ulmfit-lab] warning: message` at WARNING), on stdout,
where the command's result JSON follows it; a record logged with `extra=TO_STDERR` goes to stderr.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

PACKAGE = "ulmfit_lab"
PREFIX = "[ulmfit-lab] "
TO_STDERR = {"stream": "stderr"}  # `log.info(msg, extra=TO_STDERR)`: a line that stays off stdout


class ConsoleHandler(logging.Handler):
    """Writes `[ulmfit-lab] message` lines, flushed at once, to the `sys.stdout` of the moment.

    The stream is looked up per record rather than kept, so a stdout replaced later (pytest's capture, a
    notebook's cell output, `contextlib.redirect_stdout`) receives the lines.
    """

    def format(self, record: logging.LogRecord) -> str:
        kind = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
        return PREFIX + kind + record.getMessage()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr if getattr(record, "stream", None) == "stderr" else sys.stdout
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)


def show_progress(level: int = logging.INFO) -> ConsoleHandler:
    """Show the package's records at `level` and above on the console from now on (scripts, notebooks).

    Adds one `ConsoleHandler` to the `ulmfit_lab` logger (none if it has one already) and lowers the logger's
    level to `level` if it is higher. Returns the handler, which `logging.getLogger("ulmfit_lab")
    .removeHandler` takes away again.
    """
    logger = logging.getLogger(PACKAGE)
    handler = next((h for h in logger.handlers if isinstance(h, ConsoleHandler)), None)
    if handler is None:
        handler = ConsoleHandler(level)
        logger.addHandler(handler)
    if logger.getEffectiveLevel() > level:
        logger.setLevel(level)
    return handler


@contextmanager
def console(level: int = logging.INFO) -> Iterator[None]:
    """`show_progress` while inside; afterwards the logger is as it was (the command line, `verbose=True`)."""
    logger = logging.getLogger(PACKAGE)
    had = [h for h in logger.handlers if isinstance(h, ConsoleHandler)]
    old_level = logger.level
    handler = show_progress(level)
    try:
        yield
    finally:
        if not had:
            logger.removeHandler(handler)
        logger.setLevel(old_level)
