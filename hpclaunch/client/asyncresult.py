"""AsyncResult: a concurrent.futures.Future over one or more tasks (msg_ids).

It is a real Future so ``as_completed``, ``wait`` and ``asyncio.wrap_future`` work, and it
keeps ipyparallel's richer surface (``get``, ``metadata``, timings, progress, outputs).
The client's I/O thread completes tasks one by one through ``_task_done``; the Future
resolves when the last one lands. Nothing here touches a socket.
"""

import concurrent.futures
import sys
import threading
import time

from .. import error
from .map import join
from .progress import progress_bar

_MISSING = object()


class AsyncResult(concurrent.futures.Future):
    """The pending result of tasks sent to engines.

    ``get()`` returns one value for a single-target call and a list otherwise. A failed
    single-target call raises its own exception (RemoteError, EngineError, TaskAborted); a
    multi-target call with any failure raises a CompositeError listing each, as
    ipyparallel does, so ported ``except CompositeError`` blocks keep working.
    """

    def __init__(self, inbox, msg_ids, fname="unknown", targets=None, single=False, unwrap=None):
        super().__init__()
        # RUNNING from the start: the tasks are already on the wire, so cancel() must
        # not succeed (use abort()), and the I/O thread can always complete us.
        self.set_running_or_notify_cancel()
        self._inbox = inbox
        self.msg_ids = list(msg_ids)
        self._fname = fname
        self._targets = targets
        self._single = single
        self._unwrap = unwrap
        self._index = {m: i for i, m in enumerate(self.msg_ids)}
        self._results = [_MISSING] * len(self.msg_ids)
        self._remaining = len(self.msg_ids)
        self._arrivals = []  # indices in the order their tasks finished
        self._cond = threading.Condition()
        self._created = time.time()
        if not self.msg_ids:
            self._finish()

    # -- fed by the I/O thread ------------------------------------------------
    def _task_done(self, msg_id, value):
        """Record one task's value (or exception); returns what was stored."""
        i = self._index.get(msg_id)
        if i is None:
            return value
        unwrap = self._unwrap
        if unwrap is not None and not isinstance(value, BaseException):
            try:
                value = unwrap(value)
            except Exception as e:  # a malformed reply must not kill the I/O thread
                value = error.ProtocolError(f"reply to {msg_id} has an unexpected shape: {e!r}")
        with self._cond:
            if self._results[i] is not _MISSING:
                return self._results[i]
            self._results[i] = value
            self._arrivals.append(i)
            self._remaining -= 1
            finished = self._remaining == 0
            self._cond.notify_all()
        if finished:
            self._finish()
        return value

    def _fail_remaining(self, exc):
        """Fail every task still pending (client closed, hub query failed)."""
        for msg_id, value in zip(self.msg_ids, list(self._results)):
            if value is _MISSING:
                self._task_done(msg_id, exc)

    def _finish(self):
        try:
            value = self._resolve(self._results)
        except BaseException as e:
            self.set_exception(e)
        else:
            self.set_result(value)

    def _resolve(self, results):
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors and self._single:
            raise errors[0]
        if errors:
            raise error.CompositeError(
                f"one or more exceptions from call to method: {self._fname}", errors)
        return results[0] if self._single else list(results)

    def _wait_index(self, i, timeout=None):
        with self._cond:
            if not self._cond.wait_for(lambda: self._results[i] is not _MISSING, timeout):
                raise error.TimeoutError(f"task {self.msg_ids[i]} not done within {timeout} s")
            return self._results[i]

    # -- ipyparallel surface --------------------------------------------------
    def get(self, timeout=None):
        """The result; blocks up to ``timeout`` seconds (None or negative: forever)."""
        if timeout is not None and timeout < 0:
            timeout = None
        try:
            return self.result(timeout)
        except concurrent.futures.TimeoutError:
            if self.done():
                raise  # the task itself failed with a TimeoutError
            raise error.TimeoutError(
                f"{self.progress} of {len(self.msg_ids)} tasks of {self._fname!r} finished "
                f"within {timeout} s; wait longer, or check the engines (rc.queue_status())"
            ) from None

    def wait(self, timeout=None):
        """Wait up to ``timeout`` seconds (None or negative: forever); True when done."""
        if timeout is not None and timeout < 0:
            timeout = None
        concurrent.futures.wait([self], timeout)
        return self.done()

    def ready(self):
        return self.done()

    def successful(self):
        """True if every task succeeded; only meaningful once ready()."""
        if not self.done():
            raise AssertionError("the result is not ready: call wait() first")
        return self.exception() is None

    def abort(self):
        """Abort the tasks of this result that are still queued on their engines."""
        client = self._inbox.client
        if client is None:
            raise error.HpclaunchError("this AsyncResult is not attached to a Client")
        engines = sorted({md["engine_id"] for md in self._metadata_list()
                          if md.get("engine_id") is not None})
        return client.abort(jobs=self.msg_ids, targets=engines, block=True)

    def __len__(self):
        return len(self.msg_ids)

    def __iter__(self):
        if self._single:
            raise TypeError("an AsyncResult with a single result is not iterable; use get()")
        for i in range(len(self.msg_ids)):
            value = self._wait_index(i)
            if isinstance(value, BaseException):
                raise value
            yield value

    def __getitem__(self, key):
        """``ar[i]`` / ``ar[a:b]``: results; ``ar['stdout']``: that metadata key."""
        if isinstance(key, str):
            values = [md.get(key) for md in self._metadata_list()]
            return values[0] if self._single else values
        results = self.get()
        if self._single:
            raise TypeError("an AsyncResult with a single result cannot be indexed; use get()")
        return results[key]

    def __repr__(self):
        state = "finished" if self.done() else f"{self.progress}/{len(self.msg_ids)} done"
        return f"<{type(self).__name__}({self._fname}): {state}>"

    # -- metadata and timing --------------------------------------------------
    def _metadata_list(self):
        books = self._inbox.metadata
        return [books.get(m) or {"msg_id": m} for m in self.msg_ids]

    @property
    def metadata(self):
        """Per-task dicts (engine_id, submitted, started, completed, received, stdout,
        stderr, status, error); the dict itself for a single result. Times are epoch floats."""
        mds = self._metadata_list()
        return mds[0] if self._single else mds

    @property
    def stdout(self):
        return self["stdout"]

    @property
    def stderr(self):
        return self["stderr"]

    @property
    def engine_id(self):
        return self["engine_id"]

    @property
    def progress(self):
        """How many tasks have finished."""
        return len(self.msg_ids) - self._remaining

    @property
    def sent(self):
        return True

    def _times(self, key):
        return [md[key] for md in self._metadata_list() if md.get(key) is not None]

    @property
    def elapsed(self):
        """Seconds from submission to the last reply (or to now, while running)."""
        start = min(self._times("submitted"), default=self._created)
        end = max(self._times("received"), default=None) if self.done() else None
        return (end if end is not None else time.time()) - start

    @property
    def wall_time(self):
        """Seconds from the first submission to the last reply (once ready)."""
        if not self.done():
            raise AssertionError("the result is not ready: call wait() first")
        submitted, received = self._times("submitted"), self._times("received")
        if not submitted or not received:
            return 0.0
        return max(received) - min(submitted)

    @property
    def serial_time(self):
        """Sum of each task's compute time on its engine (completed - started)."""
        total = 0.0
        for md in self._metadata_list():
            if md.get("started") is not None and md.get("completed") is not None:
                total += md["completed"] - md["started"]
        return total

    # -- interaction ----------------------------------------------------------
    def wait_interactive(self, interval=0.1, timeout=-1):
        """Wait while showing a progress bar (tqdm if installed, else text on stderr)."""
        deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
        bar = progress_bar(len(self.msg_ids), desc=self._fname)
        try:
            while not self.done():
                bar.update_to(self.progress)
                step = interval if deadline is None else min(interval, deadline - time.monotonic())
                if step <= 0:
                    break
                self.wait(step)
            bar.update_to(self.progress)
        finally:
            bar.close()

    def display_outputs(self, file=None):
        """Print each task's stdout and stderr under an ``[stdout:<engine>]`` header."""
        out = file or sys.stdout
        for md in self._metadata_list():
            eid = md.get("engine_id")
            for name in ("stdout", "stderr"):
                text = md.get(name) or ""
                if not text:
                    continue
                header = f"[{name}:{eid}]"
                if "\n" in text.rstrip("\n"):
                    out.write(f"{header}\n{text}")
                else:
                    out.write(f"{header} {text}")
                if not text.endswith("\n"):
                    out.write("\n")
        out.flush()


class AsyncMapResult(AsyncResult):
    """The result of a map or a parallel function: chunks joined in order.

    ``ordered=False`` (load-balanced maps) makes iteration yield each chunk's items as the
    chunk finishes; ``get()`` keeps submission order either way, as in ipyparallel.
    """

    def __init__(self, inbox, msg_ids, fname="map", targets=None, dist="b", ordered=True,
                 **kwargs):
        self._dist = dist
        self.ordered = ordered
        super().__init__(inbox, msg_ids, fname=fname, targets=targets, single=False, **kwargs)

    def _wait_arrival(self, k):
        """The index of the ``k``-th task to finish, waiting for it."""
        with self._cond:
            self._cond.wait_for(lambda: len(self._arrivals) > k)
            return self._arrivals[k]

    def _resolve(self, results):
        return join(super()._resolve(results), self._dist)

    def __iter__(self):
        """Items in order, each chunk yielded as soon as it (and those before it) arrive."""
        if self._dist == "r":
            yield from self.get()
            return
        for k in range(len(self.msg_ids)):
            value = self._wait_index(k) if self.ordered else self._results[self._wait_arrival(k)]
            if isinstance(value, BaseException):
                raise value
            yield from value

    def __getitem__(self, key):
        if isinstance(key, str):
            return super().__getitem__(key)
        return self.get()[key]
