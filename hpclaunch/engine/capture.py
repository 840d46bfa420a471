"""Capturing a task's stdout/stderr: kept whole for the reply, streamed live on iopub.

While a request runs, ``sys.stdout``/``sys.stderr`` are replaced by
:class:`TaskStream` objects. Text is published line-buffered (a client watching
a long task sees each line as it is printed) and also kept, capped, for the
reply metadata. User threads may print, so every stream holds a lock.
"""

import io
import sys
import threading

#: Reply metadata keeps at most this many characters of each stream.
CAPTURE_LIMIT = 1 << 20
#: Publish without waiting for a newline once this much text is pending.
CHUNK = 64 * 1024
TRUNCATION_NOTE = "\n[hpclaunch: output truncated at 1 MiB; the full text was streamed live on iopub]\n"


class TaskStream(io.TextIOBase):
    """A text stream for one task. ``publish(name, text)`` sends a ``stream`` message.

    After :meth:`close_task`, writes (from user threads that kept a reference)
    go to ``fallback``, the real stream, instead of a finished task."""

    # Every task makes two streams, most of which never see a write: what a stream starts
    # with is a class attribute until then (setting attributes of an io object is slow).
    _kept_size = _pending_size = 0
    _truncated = _finished = False
    _kept = _pending = ()
    _limit, _chunk = CAPTURE_LIMIT, CHUNK

    def __init__(self, name, publish, fallback, limit=CAPTURE_LIMIT, chunk=CHUNK):
        self.name = name
        self._publish = publish
        self._fallback = fallback
        if limit != CAPTURE_LIMIT or chunk != CHUNK:
            self._limit, self._chunk = limit, chunk
        self._lock = threading.Lock()

    # -- file protocol ----------------------------------------------------
    encoding = "utf-8"
    errors = "strict"

    def writable(self):
        return True

    def isatty(self):
        return False

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if not text:
            return 0
        with self._lock:
            if self._finished:
                return self._fallback.write(text) if self._fallback is not None else len(text)
            if not self._pending:
                self._pending = []
            self._keep(text)
            self._pending.append(text)
            self._pending_size += len(text)
            if self._pending_size > self._chunk:
                self._send(self._take_all())
            elif "\n" in text:
                self._send(self._take_lines())
        return len(text)

    def flush(self):
        """Publish everything pending (``print(..., flush=True)`` means *now*)."""
        if not self._pending:  # (also how io's finalizer finds most task streams)
            return
        with self._lock:
            if not self._finished:
                self._send(self._take_all())

    # -- task lifecycle ---------------------------------------------------
    def close_task(self):
        """Publish the rest and stop capturing; returns the captured text for metadata."""
        with self._lock:
            if self._pending:
                self._send(self._take_all())
            self._finished = True
            return self.captured() if self._kept or self._truncated else ""

    def captured(self):
        text = "".join(self._kept)
        return text + TRUNCATION_NOTE if self._truncated else text

    # -- internals (called with the lock held) -----------------------------
    def _keep(self, text):
        room = self._limit - self._kept_size
        if room <= 0:
            self._truncated = True
            return
        if len(text) > room:
            text = text[:room]
            self._truncated = True
        if not self._kept:
            self._kept = []
        self._kept.append(text)
        self._kept_size += len(text)

    def _take_all(self):
        text = "".join(self._pending)
        self._pending = []
        self._pending_size = 0
        return text

    def _take_lines(self):
        text = "".join(self._pending)
        cut = text.rfind("\n") + 1
        rest = text[cut:]
        self._pending = [rest] if rest else []
        self._pending_size = len(rest)
        return text[:cut]

    def _send(self, text):
        if text:
            self._publish(self.name, text)


class captured_output:  # lower case: used as ``with captured_output(publish) as output``
    """Swap in task streams for the duration; yields a dict filled at exit with
    ``stdout``/``stderr`` (the captured text), after the rest was published.

    A class rather than a ``contextlib`` generator: it is entered once per task, and the
    generator machinery cost more than the swap itself."""

    __slots__ = ("_publish", "_real", "_result", "_streams")

    def __init__(self, publish):
        self._publish = publish

    def __enter__(self):
        self._real = sys.stdout, sys.stderr
        self._streams = (TaskStream("stdout", self._publish, self._real[0]),
                         TaskStream("stderr", self._publish, self._real[1]))
        self._result = {}
        sys.stdout, sys.stderr = self._streams
        return self._result

    def __exit__(self, *exc):
        sys.stdout, sys.stderr = self._real
        out, err = self._streams
        self._result["stdout"] = out.close_task()
        self._result["stderr"] = err.close_task()
        return False
