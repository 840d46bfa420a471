"""The hub: one ROUTER socket, every peer, one thread.

Clients and engines connect to the same port (see docs/protocol.md). The hub
verifies each message, reads its header and metadata, and forwards the signed
frames untouched: client requests to engines, engine replies and output to the
client that asked. It never unpickles user data. Work on the direct lane reaches
it only as the engines' books (books.py).
"""

import functools
import logging
import time

import zmq

from ..error import ProtocolError, SignatureError
from ..protocol.ratelimit import RateLimitedLog
from ..protocol import DELIM, HEARTBEAT, N_FIXED, has_message, json_frame, recv_frames, send_frames, split_idents
from ..protocol.direct import COPY_LIMIT
from . import queries
from .books import DirectBooks
from .drain import (DepartedEngines, draining_error, leaving_reason, parse_drain_request,
                    start_draining)
from .registry import EngineRegistry
from .replies import error, reply_type
from .scheduler import TaskScheduler
from .taskdb import TaskRecord, detach

log = logging.getLogger("hpclaunch.controller")

#: Requests an engine queues and answers in order (recorded in the task DB).
QUEUED = frozenset({"apply_request", "execute_request", "push_request", "pull_request"})
#: Requests an engine serves before its queued work (not recorded).
CONTROL = frozenset({"abort_request", "clear_request", "shutdown_request"})
IOPUB = frozenset({"stream", "status"})


class Hub:
    def __init__(self, socket, session, heart, db, scheme="leastload", hwm=0):
        self.socket = socket
        self.session = session
        self.heart = heart
        self.db = db
        self.engines = EngineRegistry()
        self.scheduler = TaskScheduler(self, scheme, hwm)
        self._engine_by_ident = {}          # main socket routing id -> engine id
        self.clients = {}                   # client session -> routing id of its recv socket
        self.departed = DepartedEngines()   # why engines left, for requests that name them
        self._answer_to = {}                # msg_id -> routing id of the socket that asked
        self.books = DirectBooks(self)      # the direct lane's work, as engines report it
        self.rejected = RateLimitedLog(log)
        self._last_sig_reply = {}           # routing id -> time of last signature_error
        self.stopping = False
        self._handlers = {
            "registration_request": self._register,
            "unregistration_request": self._unregister,
            "drain_request": self._engine_draining,
            "connect_request": self._connect,
            "books": self.books.on_books,
        }
        for msg_type, query in queries.HANDLERS.items():
            self._handlers[msg_type] = functools.partial(self._query, query)

    # -- the loop ------------------------------------------------------------
    def serve(self):
        """Run until shut down. Any exception from one message is logged, not fatal."""
        watch = [(self.socket, zmq.POLLIN)]  # zmq_poll itself: no Poller wrapper per wake-up
        next_beat = time.monotonic() + self.heart.period
        while not self.stopping:
            deadline = self.scheduler.next_deadline()
            held = self.books.next_deadline()
            wake = min(d for d in (next_beat, deadline, held) if d is not None)
            if zmq.zmq_poll(watch, max(0, int((wake - time.monotonic()) * 1000) + 1)):
                self._drain()
            if deadline is not None and time.monotonic() >= deadline:
                self.scheduler.tick()
            if held is not None and time.monotonic() >= held:
                self.books.tick()
            if time.monotonic() >= next_beat:
                for eid in self.heart.beat(self.socket):
                    self.engine_gone(eid, f"no heartbeat for {self.heart.liveness} periods "
                                          f"of {self.heart.period:g} s")
                next_beat = time.monotonic() + self.heart.period

    def _drain(self, limit=1000):
        for _ in range(limit):
            if not has_message(self.socket):
                break
            frames = recv_frames(self.socket, block=False)
            try:
                self.handle(frames)
            except Exception:  # one bad message must never take the controller down
                log.exception("error while handling a message; dropped it")
        self.db.flush()

    def handle(self, frames):
        if len(frames) == 3 and frames[1].bytes == HEARTBEAT:
            self.heart.pong(frames[0].bytes, frames[2].bytes)
            return
        ident = frames[0].bytes
        try:
            msg = self.session.unpack(frames, content=False, buffers=False)
        except SignatureError as e:
            self.reject("bad signature", ident, e)
            self._refuse_signature(ident, frames, e)
            return
        except ProtocolError as e:
            self.reject("malformed message", ident, e)
            return
        msg_type = msg.msg_type
        handler = self._handlers.get(msg_type)
        if handler is not None:
            handler(msg)
        elif msg_type in QUEUED or msg_type in CONTROL:
            self._request(msg)
        elif msg_type.endswith("_reply"):
            self._engine_reply(msg)
        elif msg_type in IOPUB:
            self.to_client(msg.parent.get("session"), msg.frames)
        else:
            self.reject("unknown msg_type", ident, msg_type)
            self.reply(msg, "error_reply", error("ProtocolError", f"unknown msg_type {msg_type!r}"))

    # -- sending -----------------------------------------------------------------
    def to_client(self, session, signed_frames):
        ident = self.clients.get(session)
        if ident is not None:
            send_frames(self.socket, [ident, DELIM, *signed_frames])

    def deliver(self, parent, signed_frames):
        """The answer to a client's request: to the socket that sent it when the request
        asked for that (metadata ``answer_here``: a thread blocked on the reply reads it
        itself), else to the client's receiving socket."""
        ident = self._answer_to.pop(parent.get("msg_id"), None) or self.clients.get(
            parent.get("session"))
        if ident is not None:
            send_frames(self.socket, [ident, DELIM, *signed_frames])

    def reply(self, request, msg_type, content, metadata=None, buffers=()):
        """Answer a request, signed by the hub: to the socket that asked when it said
        ``answer_here``, else to its client's receiving socket when the session is a
        connected client, else to the socket that asked (an engine)."""
        ident = self._answer_to.pop(request.header["msg_id"], None) or self.clients.get(
            request.header["session"], request.idents[0])
        self.session.send(self.socket, msg_type, content, parent=request.header,
                          metadata=metadata, buffers=buffers, ident=ident)

    def notify(self, msg_type, content):
        for ident in set(self.clients.values()):
            self.session.send(self.socket, msg_type, content, ident=ident)

    def reject(self, reason, ident, detail):
        self.rejected.warning(f"rejected a message ({reason})", f"from {bytes(ident)[:40]!r}: {detail}")

    def _refuse_signature(self, ident, frames, exc):
        """Tell the sender, unsigned and at most once a second, that its key is wrong."""
        now = time.monotonic()
        if now - self._last_sig_reply.get(ident, 0) < 1.0:
            return
        self._last_sig_reply[ident] = now
        if len(self._last_sig_reply) > 10_000:
            self._last_sig_reply.clear()
        try:
            _, signed = split_idents(frames)
            parent = signed[1].bytes if len(signed) > 1 and len(signed[1]) < 65536 else b"{}"
        except ProtocolError:
            parent = b"{}"
        header = self.session.header("signature_error")
        content = error("SignatureError", str(exc))
        self.socket.send_multipart([ident, DELIM, b"", json_frame(header), parent,
                                    b"{}", json_frame(content)])

    def _query(self, query, msg):
        """A question about the books: answered at once if they cannot have changed,
        else once every engine has sent the books of its direct-lane work."""
        if queries.answerable_now(self, msg):
            query(self, msg)
        else:
            self.books.answer_when_current(query, msg)

    # -- engines -------------------------------------------------------------------
    def _register(self, msg):
        c = msg.load_content()
        uuid = c.get("uuid")
        heart = c.get("heart")
        if not isinstance(uuid, str) or not isinstance(heart, str) \
                or not isinstance(c.get("info", {}), dict):
            self.reply(msg, "registration_reply", error(
                "ProtocolError", "registration_request needs string 'uuid' and 'heart', "
                                 "and 'info' (if given) must be an object"))
            return
        known = self.engines.by_uuid(uuid)
        if known is not None:   # a retried request: same answer
            self.reply(msg, "registration_reply", self._registration_ok(known))
            return
        try:
            rec = self.engines.register(uuid, msg.idents[0], heart.encode(), c.get("iopub"),
                                        c.get("hostname"), c.get("pid"), c.get("requested_id"),
                                        c.get("info"))
        except ValueError as e:
            self.reply(msg, "registration_reply", error("ValueError", str(e)))
            return
        ledger = c.get("books")
        rec.ledger = ledger.encode() if isinstance(ledger, str) else None
        self._engine_by_ident[rec.ident] = rec.id
        self.heart.add(rec.id, rec.heart)
        self.reply(msg, "registration_reply", self._registration_ok(rec))
        log.info("engine %d registered (%s pid %s)", rec.id, rec.hostname, rec.pid)
        self.notify("registration_notification", {"id": rec.id, **rec.describe()})
        self.scheduler.engine_added(rec)

    def _registration_ok(self, rec):
        return {"status": "ok", "id": rec.id, "hb_period": self.heart.period,
                "hb_liveness": self.heart.liveness}

    def _unregister(self, msg):
        eid = self._engine_by_ident.get(msg.idents[0])
        if eid is not None:
            self.engine_gone(eid, leaving_reason(self.engines.get(eid)), logging.INFO)

    def _engine_draining(self, msg):
        """An engine drains before its job's walltime ends (see drain.py); bad ones are dropped."""
        rec = self.engines.get(self._engine_by_ident.get(msg.idents[0]))
        if rec is None or rec.draining is not None:
            self.reject("drain_request from a socket that is not a registered engine, or "
                         "a repeated one", msg.idents[0], msg.msg_type)
            return
        try:
            drain_at, running = parse_drain_request(msg.load_content(), rec)
        except (ValueError, ProtocolError) as e:
            self.reject("malformed drain_request", msg.idents[0], e)
            return
        start_draining(self, rec, drain_at, running, QUEUED)

    def engine_gone(self, eid, reason, level=logging.WARNING):
        """Forget an engine; retry or fail (EngineError) each of its unfinished requests."""
        rec = self.engines.remove(eid)
        if rec is None:
            return
        self._engine_by_ident.pop(rec.ident, None)
        self.heart.remove(eid)
        log.log(level, "engine %d (%s pid %s) is gone: %s; %d unfinished request(s)",
                eid, rec.hostname, rec.pid, reason, len(rec.outstanding))
        self.scheduler.engine_removed(rec)
        self.books.engine_gone(eid)
        outstanding, balanced = rec.outstanding, rec.balanced
        rec.outstanding, rec.balanced = {}, set()
        for msg_id, header in outstanding.items():
            if msg_id in balanced and self.scheduler.reroute(eid, msg_id, "error", "EngineError"):
                continue
            text = (f"engine {eid} ({rec.hostname} pid {rec.pid}) is gone before answering "
                    f"{header['msg_type']} {msg_id}: {reason}")
            self.answer(header, error("EngineError", text, engine_id=eid), eid)
            if msg_id in balanced:
                self.scheduler.done(msg_id)
        self.departed.add(eid, reason)
        self.notify("unregistration_notification", {"id": eid, "reason": reason})

    def answer(self, header, content, eid):
        """A reply no engine will send (it died, or the request could never run), made and
        signed by the hub, recorded, and sent to the client that asked."""
        now = time.time()
        metadata = {"engine_id": eid, "status": content["status"], "started": None,
                    "completed": now, "stdout": "", "stderr": ""}
        _, frames = self.session.pack(reply_type(header["msg_type"]), content, header, metadata)
        signed = frames[1:]
        self.db.complete(header["msg_id"], content["status"], signed, None, now, "", "")
        self.deliver(header, signed)

    # -- clients -----------------------------------------------------------------
    def _connect(self, msg):
        self.clients[msg.header["session"]] = msg.idents[0]
        engines = {str(r.id): r.describe() for r in self.engines.records()}
        self.reply(msg, "connect_reply", {"status": "ok", "engines": engines,
                                          "hb_period": self.heart.period,
                                          "hb_liveness": self.heart.liveness})

    def _request(self, msg):
        """A client's request for an engine: route it (direct) or hand it to the scheduler."""
        if msg.metadata.get("direct") is True and msg.msg_type in QUEUED:
            self.books.request_copy(msg)  # a copy, for the books: relay nothing
            return
        self.clients.setdefault(msg.header["session"], msg.idents[0])
        if msg.metadata.get("answer_here") is True:
            self._answer_to[msg.header["msg_id"]] = msg.idents[0]
        eid = msg.metadata.get("engine")
        if msg.msg_type == "shutdown_request" and eid is None:
            self._shutdown_request(msg)
            return
        if eid is None and msg.msg_type in CONTROL:
            self.reply(msg, reply_type(msg.msg_type), error(
                "ProtocolError", f"{msg.msg_type} needs metadata.engine: control messages "
                                 "go to one named engine, never to the task scheduler"))
            return
        if eid is None:
            self.record(msg, None)
            self.scheduler.submit(msg)
            return
        rec = self.engines.get(eid) if isinstance(eid, int) else None
        if rec is None:
            self.reply(msg, reply_type(msg.msg_type), error(
                "EngineError", f"engine {eid!r} is not registered{self.departed.explain(eid)} "
                               f"(registered: {self.engines.ids()})", engine_id=eid))
            return
        if msg.msg_type in QUEUED:
            self.record(msg, eid)
            if rec.draining is not None:
                self.answer(msg.header, draining_error(rec, msg.msg_type, msg.msg_id), eid)
                return
        self.send_to_engine(rec, msg)

    def record(self, msg, eid):
        """Store the request; the message keeps the same detached frames (see taskdb.detach)
        so a task waiting in the scheduler pins no receive buffer either."""
        msg.frames = detach(msg.frames)
        msg.buffers = msg.frames[N_FIXED:]
        h = msg.header
        self.db.add(TaskRecord(h["msg_id"], h["msg_type"], h["session"], eid, time.time(),
                               msg.frames))

    def send_to_engine(self, rec, msg, balanced=False):
        msg_id = msg.header["msg_id"]
        rec.outstanding[msg_id] = msg.header
        if balanced:
            rec.balanced.add(msg_id)
        send_frames(self.socket, [rec.ident, DELIM, *msg.frames])

    def _engine_reply(self, msg):
        eid = self._engine_by_ident.get(msg.idents[0])
        if eid is None:
            # a late answer from an engine already declared dead: its request was answered
            self.reject("reply from an unregistered engine", msg.idents[0], msg.msg_type)
            return
        md = msg.metadata
        if md.get("direct") is True:
            self.reject("a copy of a direct-lane reply (protocol 1.3; engines send their "
                        "books now), ignored", msg.idents[0], msg.msg_type)
            return
        rec = self.engines.get(eid)
        parent_id = msg.parent.get("msg_id")
        if rec.outstanding.pop(parent_id, None) is None:
            return  # not a request we sent (e.g. the hub's own shutdown_request)
        status = md.get("status", "ok")
        balanced = parent_id in rec.balanced
        if balanced:
            rec.balanced.discard(parent_id)
            ename = msg.load_content().get("ename") if status == "error" else None
            if self.scheduler.reroute(eid, parent_id, status, ename):
                return
        frames = msg.frames
        task = self.db.complete(parent_id, status, frames, md.get("started"),
                                time.time(), md.get("stdout", ""), md.get("stderr", ""))
        if task is not None:
            rec.completed += 1
        self.deliver(msg.parent, frames)
        if balanced:
            self.scheduler.done(parent_id)

    def not_kept(self, msg):
        """What ``get_result`` from another client finds for a direct-lane result too big
        for the books: a signed error saying where the result went."""
        content = error("ResultNotKept",
                        f"the result of {msg.parent.get('msg_id')} went straight from engine "
                        f"{msg.metadata.get('engine_id')} to the client that sent the task (the "
                        f"direct lane); results over {COPY_LIMIT >> 20} MiB are not copied to the "
                        "controller, so only that client has it", engine_id=msg.metadata.get("engine_id"))
        _, frames = self.session.pack(msg.msg_type, content, msg.parent,
                                      {**msg.metadata, "status": "error"})
        return frames[1:]

    # -- shutting down -------------------------------------------------------------
    def _shutdown_request(self, msg):
        engines = bool(msg.load_content().get("engines", True))
        self.reply(msg, "shutdown_reply", {"status": "ok"})
        self.shutdown(engines)

    def shutdown(self, engines=True):
        if self.stopping:
            return
        if engines:
            for rec in self.engines.records():
                self.session.send(self.socket, "shutdown_request", {}, metadata={"engine": rec.id},
                                  ident=rec.ident)
        self.notify("shutdown_notification", {})
        self.stopping = True
