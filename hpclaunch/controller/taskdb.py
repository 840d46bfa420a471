"""Task records kept by the hub: who asked what of which engine, and the answer.

Results are stored as the signed frames the engine sent, never unpickled: the
hub cannot run user code and can hand the exact signed reply to any client
later. ``TaskDB`` is the small interface a persistent backend implements too.
"""

import abc
import collections

PENDING = "pending"


class TaskRecord:
    __slots__ = ("msg_id", "msg_type", "session", "engine_id", "submitted", "started",
                 "completed", "status", "request", "result", "stdout", "stderr", "nbytes")

    def __init__(self, msg_id, msg_type, session, engine_id, submitted, request):
        self.msg_id = msg_id
        self.msg_type = msg_type
        self.session = session
        self.engine_id = engine_id
        self.submitted = submitted
        self.started = None
        self.completed = None
        self.status = PENDING
        self.request = detach(request)  # signed request frames as received
        self.result = None          # signed reply frames as received
        self.stdout = ""
        self.stderr = ""
        self.nbytes = _size(request)

    @property
    def pending(self):
        return self.status == PENDING

    def summary(self):
        """The JSON-able fields (no frames)."""
        return {"msg_id": self.msg_id, "msg_type": self.msg_type, "session": self.session,
                "engine_id": self.engine_id, "submitted": self.submitted,
                "started": self.started, "completed": self.completed, "status": self.status,
                "stdout": self.stdout, "stderr": self.stderr}


def detach(frames, limit=65536):
    """Frames safe to keep: small ones copied to bytes. A received small zmq.Frame is a
    view into libzmq's shared 8 KiB receive batch; keeping it pins the whole batch
    (measured: 12 KB per stored task). Big frames own their memory and stay zero-copy."""
    if frames is None:
        return None
    return [f if type(f) is bytes or len(f) >= limit else f.bytes for f in frames]


def _size(frames):
    return sum(map(len, frames)) if frames else 0


class TaskDB(abc.ABC):
    """What the hub needs from a task store."""

    @abc.abstractmethod
    def add(self, record):
        """Store a new (pending) record."""

    @abc.abstractmethod
    def get(self, msg_id):
        """The record of ``msg_id``, or None."""

    @abc.abstractmethod
    def complete(self, msg_id, status, result, started, completed, stdout, stderr):
        """Attach the reply to a pending record; returns the record (or None)."""

    @abc.abstractmethod
    def drop(self, msg_ids):
        """Forget these records."""

    @abc.abstractmethod
    def msg_ids(self):
        """Every stored msg_id, oldest first."""

    @abc.abstractmethod
    def records(self):
        """Every record, oldest first (frames may be left out: use get() for those)."""

    def find(self, matches):
        """Summaries of the records for which ``matches(summary)`` is true."""
        return [summary for summary in (r.summary() for r in self.records()) if matches(summary)]

    def flush(self):
        """Make recent writes durable (a no-op for memory)."""

    def close(self):
        self.flush()


class MemoryDB(TaskDB):
    """Records in insertion order, bounded by count and bytes.

    When a bound is crossed the oldest *completed* records are culled; pending
    ones are never dropped (their owners are still waiting).
    """

    def __init__(self, max_records=10_000, max_bytes=1 << 30):
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._records = collections.OrderedDict()
        self._done = collections.deque()   # completed msg_ids, oldest first
        self.culled = 0

    def __len__(self):
        return len(self._records)

    def add(self, record):
        self._records[record.msg_id] = record
        self.nbytes += record.nbytes
        self._cull()

    def get(self, msg_id):
        return self._records.get(msg_id)

    def complete(self, msg_id, status, result, started, completed, stdout, stderr):
        rec = self._records.get(msg_id)
        if rec is None or not rec.pending:
            return rec
        rec.status, rec.result = status, detach(result)
        rec.started, rec.completed = started, completed
        rec.stdout, rec.stderr = stdout, stderr
        added = _size(result)
        rec.nbytes += added
        self.nbytes += added
        self._done.append(msg_id)
        self._cull()
        return rec

    def drop(self, msg_ids):
        for msg_id in msg_ids:
            rec = self._records.pop(msg_id, None)
            if rec is not None:
                self.nbytes -= rec.nbytes

    def msg_ids(self):
        return list(self._records)

    def records(self):
        return self._records.values()

    def _cull(self):
        while self._done and (len(self._records) > self.max_records or self.nbytes > self.max_bytes):
            rec = self._records.pop(self._done.popleft(), None)
            if rec is not None:
                self.nbytes -= rec.nbytes
                self.culled += 1
