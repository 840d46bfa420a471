"""Rate-limited warnings for rejected input.

A hostile or broken peer can send thousands of bad messages a second; every
long-running part logs each distinct reason at most once per interval, with a
count of what it left out, so the log stays readable and bounded.
"""

import time


class RateLimitedLog:
    """Log each distinct reason at most once per ``interval`` seconds, counting the rest."""

    def __init__(self, log, interval=10.0, clock=time.monotonic):
        self._log = log
        self._interval = interval
        self._clock = clock
        self._last = {}
        self._suppressed = {}

    def warning(self, reason, detail=""):
        """Log ``reason: detail`` unless ``reason`` was logged within the interval.
        Returns whether it was logged."""
        now = self._clock()
        last = self._last.get(reason)
        if last is not None and now - last < self._interval:
            self._suppressed[reason] = self._suppressed.get(reason, 0) + 1
            return False
        skipped = self._suppressed.pop(reason, 0)
        self._last[reason] = now
        more = f" ({skipped} more like this since last report)" if skipped else ""
        self._log.warning("%s%s%s", reason, f": {detail}" if detail else "", more)
        if len(self._last) > 1000:  # bound memory if reasons vary wildly
            self._last.clear()
        return True
