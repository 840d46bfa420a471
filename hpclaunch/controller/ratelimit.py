"""Rate-limited logging of rejected messages.

A flood of hostile frames must not flood the log: each reason is logged at most
once per interval, with the count of what was suppressed in between.
"""

import time


class RateLimitedLog:
    def __init__(self, logger, interval=10.0):
        self.log = logger
        self.interval = interval
        self._last = {}       # reason -> monotonic time last logged
        self._suppressed = {}  # reason -> count since then
        self.total = 0

    def note(self, reason, ident, detail):
        self.total += 1
        now = time.monotonic()
        if now - self._last.get(reason, -self.interval) < self.interval:
            self._suppressed[reason] = self._suppressed.get(reason, 0) + 1
            return
        more = self._suppressed.pop(reason, 0)
        self._last[reason] = now
        extra = f" ({more} more like it suppressed)" if more else ""
        self.log.warning("rejected a message (%s) from %r: %s%s", reason, bytes(ident)[:40],
                         detail, extra)
