"""The books of the direct lane, as engines report them (engine/ledger.py).

Work on the direct lane goes client -> engine -> client; each engine notes the requests
it read and the replies it sent and sends the notes here in batches (``books``). The
hub records them as it records work it relayed itself. Because the notes come in
batches, a query that reads the books (queue_status, result_request, history, ...) is
held: the hub asks every engine to send what it holds (``books_request``) and answers
once all have, or after ``BOOKS_WAIT`` seconds (an engine whose Python is stuck in C
code without releasing the GIL cannot answer sooner; the query is then answered from
the books as they are, which the log says).
"""

import itertools
import logging
import time

from ..error import ProtocolError
from ..protocol import N_FIXED
from ..protocol.direct import buffers_left_out
from .drain import draining_error
from .replies import error
from .taskdb import TaskRecord

log = logging.getLogger("hpclaunch.controller")

#: Longest a query about the books waits for the engines' books.
BOOKS_WAIT = 1.0


class HeldQuery:
    __slots__ = ("msg", "answer", "waiting", "deadline")

    def __init__(self, msg, answer, waiting, deadline):
        self.msg, self.answer, self.waiting, self.deadline = msg, answer, waiting, deadline


class DirectBooks:
    def __init__(self, hub):
        self.hub = hub
        self._held = {}                    # token -> HeldQuery
        self._tokens = itertools.count(1)

    # -- engines' books -------------------------------------------------------------
    def on_books(self, msg):
        """A batch of rows from an engine's ledger; bad books are logged and dropped."""
        hub = self.hub
        try:
            eid, requests, tasks, replies, answers = _parse(msg)
        except ProtocolError as e:
            hub.reject("malformed books", msg.idents[0], e)
            return
        rec = hub.engines.get(eid)
        if rec is not None:
            if msg.idents[0] != rec.ledger:
                hub.reject("books from a socket that is not the named engine's ledger",
                           msg.idents[0], eid)
                return
            rec.ledger_up = True
        frames = _Frames(msg.buffers[0] if msg.buffers else b"")
        unanswered = []                    # requests of an engine already gone
        for msg_id, msg_type, session, submitted, sizes in requests:
            header = self._request(rec, eid, msg_id, msg_type, session, submitted,
                                   frames.take(sizes))
            if header is not None:
                unanswered.append(header)
        for (msg_id, msg_type, session, submitted, sizes,
             status, started, _completed, stdout, stderr, reply_sizes) in tasks:
            self._request(rec, eid, msg_id, msg_type, session, submitted, frames.take(sizes))
            self._reply(rec, msg_id, status, started, stdout, stderr, frames.take(reply_sizes))
        for msg_id, status, started, _completed, stdout, stderr, sizes in replies:
            self._reply(rec, msg_id, status, started, stdout, stderr, frames.take(sizes))
        for header in unanswered:
            hub.answer(header, error("EngineError", f"engine {eid} is gone before answering "
                                     f"{header['msg_type']} {header['msg_id']}"
                                     f"{hub.departed.explain(eid)}", engine_id=eid), eid)
        for token in answers:
            self._answered(token, eid)

    def request_copy(self, msg):
        """A client's copy of a direct request it does not wait for (it may wait unread at
        the engine, behind work that runs): booked at once, as the engine's row would."""
        eid = msg.metadata.get("engine")
        rec = self.hub.engines.get(eid) if isinstance(eid, int) else None
        if rec is None:
            self.hub.reject("a direct-lane copy for no registered engine",
                            msg.idents[0], f"{msg.msg_type} for engine {eid!r}")
            return
        h = msg.header
        self._request(rec, eid, h["msg_id"], h["msg_type"], h["session"], h.get("date"),
                      msg.frames)

    def _request(self, rec, eid, msg_id, msg_type, session, submitted, frames):
        """Record a direct request; returns its header if the engine is already gone."""
        hub = self.hub
        if hub.db.get(msg_id) is not None:
            return None                    # booked twice: the first counts
        header = {"msg_id": msg_id, "msg_type": msg_type, "session": session}
        request = None if buffers_left_out(frames) else frames
        hub.db.add(TaskRecord(msg_id, msg_type, session, eid,
                              submitted if isinstance(submitted, (int, float)) else time.time(),
                              request))
        if rec is None:
            return header
        if rec.draining is not None and msg_id not in rec.running_at_drain:
            # it will not run there (the engine refuses it too; that reply is dropped)
            hub.answer(header, draining_error(rec, msg_type, msg_id), eid)
            return None
        rec.outstanding[msg_id] = header
        return None

    def _reply(self, rec, msg_id, status, started, stdout, stderr, frames):
        hub = self.hub
        if rec is not None and rec.outstanding.pop(msg_id, None) is None:
            return                         # answered here already (the engine drains)
        if buffers_left_out(frames):
            frames = hub.not_kept(hub.session.unpack_signed([], frames, check_replay=False,
                                                            content=False, buffers=False))
        task = hub.db.complete(msg_id, status, frames, started, time.time(), stdout, stderr)
        if task is not None and rec is not None:
            rec.completed += 1

    # -- queries held until the books are current ------------------------------------
    def answer_when_current(self, answer, msg):
        """Run ``answer(hub, msg)`` once every engine has sent its books."""
        hub = self.hub
        engines = [r for r in hub.engines.records() if r.ledger_up]
        if not engines:
            answer(hub, msg)
            return
        token = str(next(self._tokens))
        for r in engines:
            hub.session.send(hub.socket, "books_request", {"token": token}, ident=r.ledger)
        self._held[token] = HeldQuery(msg, answer, {r.id for r in engines},
                                      time.monotonic() + BOOKS_WAIT)

    def _answered(self, token, eid):
        held = self._held.get(token)
        if held is not None:
            held.waiting.discard(eid)
            if not held.waiting:
                self._release(token)

    def engine_gone(self, eid):
        for token, held in list(self._held.items()):
            held.waiting.discard(eid)
            if not held.waiting:
                self._release(token)

    def next_deadline(self):
        return min((h.deadline for h in self._held.values()), default=None)

    def tick(self):
        now = time.monotonic()
        for token in [t for t, h in self._held.items() if h.deadline <= now]:
            held = self._held[token]
            log.info("answering %s without the books of engine(s) %s: no answer in %g s",
                     held.msg.msg_type, sorted(held.waiting), BOOKS_WAIT)
            self._release(token)

    def _release(self, token):
        held = self._held.pop(token)
        try:
            held.answer(self.hub, held.msg)
        except Exception:
            log.exception("error while answering %s; dropped it", held.msg.msg_type)


class _Frames:
    """The frames of the rows, read off the books' one buffer in order."""

    def __init__(self, blob):
        # one copy to bytes, whose slices are bytes at once (a memoryview's need .tobytes())
        self._blob, self._pos = blob if type(blob) is bytes else bytes(blob), 0

    def take(self, sizes):
        ends = list(itertools.accumulate(sizes, initial=self._pos))
        self._pos = ends[-1]
        blob = self._blob
        return [blob[a:b] for a, b in zip(ends, ends[1:])]


_TEXT, _TIME, _SIZES = (str,), (int, float, type(None)), (list,)
#: The types each field of a row may have, by kind (docs/protocol.md).
_REQUEST = (_TEXT, _TEXT, _TEXT, _TIME, _SIZES)
_REPLY = (_TEXT, _TIME, _TIME, _TEXT, _TEXT, _SIZES)
_FIELDS = {"requests": _REQUEST, "tasks": _REQUEST + _REPLY, "replies": (_TEXT,) + _REPLY}
#: ... as every tuple of types a well-formed row has: a row is checked in one lookup.
_SHAPES = {kind: frozenset(itertools.product(*fields)) for kind, fields in _FIELDS.items()}
_INT = {int}


def _parse(msg):
    """``(engine id, requests, tasks, replies, answers)`` of well-formed books, else
    ProtocolError."""
    c = msg.load_content()
    eid, answers = c.get("id"), c.get("answers", [])
    if not isinstance(eid, int) or not isinstance(answers, list):
        raise ProtocolError("books needs an integer 'id' and a list 'answers'")
    if "notes" in c:
        raise ProtocolError("books with 'notes' come from a protocol 1.4 engine; this "
                            "controller reads 1.5 rows: run one hpclaunch version throughout")
    total = 0
    rows = []
    for kind, fields in _FIELDS.items():
        listed = c.get(kind, [])
        if not isinstance(listed, list):
            raise ProtocolError(f"books' {kind!r} is not a list")
        shapes = _SHAPES[kind]
        where_sizes = [i for i, types in enumerate(fields) if types is _SIZES]
        for row in listed:
            if type(row) is not list or tuple(map(type, row)) not in shapes:
                raise ProtocolError(f"bad row in {kind}: {str(row)[:200]}")
            for i in where_sizes:
                sizes = row[i]
                if len(sizes) < N_FIXED or set(map(type, sizes)) != _INT or min(sizes) < 0:
                    raise ProtocolError(f"bad frame sizes in {kind}: {str(row)[:200]}")
                total += sum(sizes)
        rows.append(listed)
    blob = len(msg.buffers[0]) if len(msg.buffers) == 1 else None
    if len(msg.buffers) > 1 or (blob or 0) != total:
        raise ProtocolError(f"the rows' frames add up to {total} bytes; the message has "
                            f"{len(msg.buffers)} buffer(s) of {blob or 0} bytes (expected one)")
    return (eid, *rows, [str(a) for a in answers])
