"""Engine logging: stderr lines tagged with the engine id, and rate-limited warnings.

The id is unknown until registration, so a filter stamps each record with the
current value. Rate-limited warnings come from hpclaunch.protocol.ratelimit.
"""

import logging
import sys

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

