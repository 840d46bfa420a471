"""Progress bars for AsyncResult.wait_interactive: tqdm when installed, else plain text.

tqdm is optional (the ``progress`` extra); a batch job's log still deserves a readable
bar, so the fallback writes one ``\\r``-updated line to stderr.
"""

import sys
import time


class _TqdmBar:
    def __init__(self, total, desc):
        import tqdm

        self._bar = tqdm.tqdm(total=total, desc=desc, unit="tasks", file=sys.stderr)

    def update_to(self, n):
        if n > self._bar.n:
            self._bar.update(n - self._bar.n)

    def close(self):
        self._bar.close()


class TextBar:
    """``desc: [#####.....] 5/10 tasks 1.2s`` rewritten in place on ``file``."""

    def __init__(self, total, desc="", width=30, file=None):
        self.total, self.desc, self.width = total, desc, width
        self.file = file or sys.stderr
        self.n = -1
        self._start = time.monotonic()

    def update_to(self, n):
        if n == self.n:
            return
        self.n = n
        filled = self.width if not self.total else self.width * n // self.total
        bar = "#" * filled + "." * (self.width - filled)
        elapsed = time.monotonic() - self._start
        self.file.write(f"\r{self.desc}: [{bar}] {n}/{self.total} tasks {elapsed:.1f}s")
        self.file.flush()

    def close(self):
        self.file.write("\n")
        self.file.flush()


def progress_bar(total, desc=""):
    try:
        return _TqdmBar(total, desc)
    except ImportError:
        return TextBar(total, desc)
