"""Engine logging: stderr lines tagged with the engine id, and rate-limited warnings.

The id is unknown until registration, so a filter stamps each record with the
current value. A misbehaving peer could send thousands of bad messages; the
rate limiter keeps the log readable (same reason at most once per interval).
"""

import logging
import sys
import time

LOG_FORMAT = "%(asctime)s %(levelname)s engine %(engine_id)s: %(message)s"
logger = logging.getLogger("hpclaunch.engine")


class EngineIdFilter(logging.Filter):
    """Adds ``record.engine_id`` (``?`` before registration)."""

    def __init__(self):
        super().__init__()
        self.engine_id = "?"

    def filter(self, record):
        record.engine_id = self.engine_id
        return True


ENGINE_ID = EngineIdFilter()


def setup_logging(level="INFO"):
    """Log to the real stderr (captured before any task swaps sys.stderr)."""
    handler = logging.StreamHandler(sys.__stderr__ or sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(ENGINE_ID)
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper() if isinstance(level, str) else level)
    # user code may configure the root logger; keep the engine's lines out of it
    logger.propagate = False
    return logger


def set_engine_id(engine_id):
    ENGINE_ID.engine_id = str(engine_id)


class RateLimitedLog:
    """Log each distinct reason at most once per ``interval`` seconds, counting the rest."""

    def __init__(self, log=logger, interval=10.0, clock=time.monotonic):
        self._log = log
        self._interval = interval
        self._clock = clock
        self._last = {}
        self._suppressed = {}

    def warning(self, reason, detail=""):
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
