"""The progress line of the developer commands (``bench`` and ``demo``).

On a terminal the line is rewritten in place; anywhere else (a pipe, a CI log) each update is
a line of its own, so a log keeps every step instead of a stream of carriage returns.
"""

from __future__ import annotations

import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """A bar of ``done`` out of ``total`` and a text, written to ``stream`` on each update.

    ``stream=None`` makes every call a no-op, so callers need no branch for a quiet run.
    With ``timed`` the seconds since the bar was made come before the text: long runs (the
    bench) show that they are still moving even while a step takes minutes.
    """

    def __init__(
        self, stream: TextIO | None, total: int, *, width: int = 20, timed: bool = False
    ) -> None:
        self._stream = stream
        self._total = max(total, 1)
        self._width = width
        self._timed = timed
        self._started = time.monotonic()
        self._tty = bool(stream is not None and stream.isatty())
        self.done = 0

    def show(self, text: str, *, done: int | None = None) -> None:
        """Write the bar (at ``done``, when given) followed by ``text``."""
        if done is not None:
            self.done = done
        if self._stream is None:
            return
        filled = self._width * min(self.done, self._total) // self._total
        bar = "#" * filled + "-" * (self._width - filled)
        if self._timed:
            text = f"{time.monotonic() - self._started:5.0f}s {text}"
        line = f"[{bar}] {text}"
        self._stream.write("\r\033[K" + line if self._tty else line + "\n")
        self._stream.flush()

    def advance(self) -> None:
        """One more step is done (shown with the next :meth:`show`)."""
        self.done += 1

    def close(self) -> None:
        """Erase the line on a terminal, so what is printed next starts on a clean line."""
        if self._stream is not None and self._tty:
            self._stream.write("\r\033[K")
            self._stream.flush()
