"""A progress bar for long CLI jobs: redrawn in place on a terminal, plain lines otherwise. Stdlib only."""

from __future__ import annotations

import time
from typing import TextIO

BAR_WIDTH = 30
# Without a terminal, a line every this many seconds (and at every tenth of the way).
PLAIN_EVERY = 10.0


class ProgressBar:
    """Shows `done` of `total` units with a rate and extra counters."""

    def __init__(self, stream: TextIO, *, unit: str = "rows") -> None:
        self._stream = stream
        self._unit = unit
        self._tty = bool(getattr(stream, "isatty", lambda: False)())
        self._started = time.monotonic()
        self._last_plain = -PLAIN_EVERY
        self._last_tenth = -1
        self._drawn = False

    def update(self, fraction: float, count: int, extra: str = "") -> None:
        """Redraw with `fraction` (0..1) of the work done and `count` units so far."""
        fraction = min(max(fraction, 0.0), 1.0)
        elapsed = max(time.monotonic() - self._started, 1e-6)
        rate = count / elapsed
        text = f"{fraction * 100:5.1f}% {count:,} {self._unit} ({rate:,.0f}/s)" + (
            f"  {extra}" if extra else ""
        )
        if self._tty:
            filled = int(fraction * BAR_WIDTH)
            bar = "#" * filled + "." * (BAR_WIDTH - filled)
            self._stream.write(f"\r[{bar}] {text}\x1b[K")
            self._stream.flush()
            self._drawn = True
            return
        tenth = int(fraction * 10)
        now = time.monotonic()
        if tenth > self._last_tenth or now - self._last_plain >= PLAIN_EVERY:
            self._last_tenth, self._last_plain = tenth, now
            self._stream.write(text + "\n")
            self._stream.flush()

    def close(self) -> None:
        """End the bar's line (on a terminal)."""
        if self._tty and self._drawn:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = False
