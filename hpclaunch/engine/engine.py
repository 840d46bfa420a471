"""The engine process: sockets, registration, and the message loop.

One thread runs user code; control requests overtake queued work because the
loop drains the socket into a local queue before running one task. The
heartbeat lives in its own C-level device (see heart.py), so long tasks do not
make the controller think we died.
"""

import collections
import signal
import threading
import time
import uuid

import zmq

from ..error import ProtocolError
from ..protocol import Session, has_message, make_curve_client, recv_frames, utcnow
from ..protocol.recvpool import POOL as RECEIVE_POOL
from ..protocol.stream import Reassembler, send_message
from ..protocol.transport import SPIN_SECONDS, spin_poll
from .capture import captured_output
from .direct import bind_direct_port
from .drain import DrainSchedule, drain_time_text, refusal
from .heart import Heart
from .kernel import Kernel, error_content
from .ledger import Ledger
from ..protocol.ratelimit import RateLimitedLog
from .logs import logger, set_engine_id
from .registration import RegistrationFailed, register, registration_content
from .wire import CONTROL_REQUESTS, WORK_REQUESTS, reply_metadata, reply_type, unsigned_rejection

#: Poll timeout while idle: low CPU, yet signals and silence are noticed within a second.
IDLE_POLL_MS = 1000
#: On a clean exit, how long close() may wait to deliver the last replies.
LEAVE_LINGER_MS = 1000
#: How many abort ids of not-yet-arrived requests we remember.
ABORT_MEMORY = 10000


class EngineStop(BaseException):
    """Raised from a signal handler to stop a running task (BaseException: user
    code catching ``Exception`` does not swallow it)."""


class ShutdownRequested(Exception):
    """A shutdown_request was answered; the loop should leave."""


class Engine:
    """Connects to the controller at ``url`` and serves requests until told to stop."""

    def __init__(self, url, key, timeout=30.0, requested_id=None, install_main=True, curve=None,
                 info=None, drain_at=None, direct=True):
        self.url = url
        self.info = dict(info or {})   # extra facts for registration (e.g. MPI rank and size)
        if drain_at is not None:
            self.info["drain_at"] = drain_at
        #: When to stop taking work (a batch job's walltime is ending); None: never.
        self.drain = DrainSchedule(drain_at, self._announce_drain)
        self.curve = curve
        self.timeout = float(timeout)
        self.requested_id = requested_id
        self.uuid = uuid.uuid4().hex
        self.id = None
        self.session = Session(key, session=self.uuid)
        self.kernel = Kernel(install_main=install_main)
        self.queue = collections.deque()
        self._abort_later = collections.OrderedDict()
        self.bad = RateLimitedLog(logger)
        self._streams = Reassembler(self.bad.warning, self.session)  # of the direct lane
        self._iopub_lock = threading.Lock()
        self._stop_signal = None
        self._busy = False
        self._old_handlers = {}
        self._spin_until = 0.0  # poll without sleeping until then (transport.spin_poll)

        self.context = zmq.Context()
        self.main = self._dealer(f"engine-{self.uuid}")
        self.iopub = self._dealer(f"iopub-{self.uuid}")
        self.heart = Heart(self.context, url, f"heart-{self.uuid}", curve)
        # the direct lane (protocol/direct.py); off behind an SSH tunnel, which clients cannot use
        self.direct = self.ledger = None
        if direct:
            self.direct, self.info["direct"] = bind_direct_port(self.context, url, curve,
                                                                   self.uuid)
            self.ledger = Ledger(self.context, url, f"books-{self.uuid}", self.session, curve)

    def _dealer(self, identity):
        sock = self.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.setsockopt(zmq.IDENTITY, identity.encode())
        make_curve_client(sock, self.curve)
        sock.connect(self.url)
        return sock

    # -- lifecycle ----------------------------------------------------------
    def run(self):
        """Register, serve, leave. Returns the process exit code."""
        self._install_signal_handlers()
        clean = True
        try:
            self.heart.start()
            content = registration_content(self.uuid, f"heart-{self.uuid}", f"iopub-{self.uuid}",
                                           self.requested_id, self.info,
                                           self.ledger.identity if self.ledger else None)
            reply = register(self.session, self.main, self.url, content, self.timeout,
                             should_stop=lambda: self._stop_signal is not None)
            if reply is None:
                logger.info("received %s before registration completed; exiting", self._stop_signal)
                return 0
            self.id = reply["id"]
            set_engine_id(self.id)
            if self.ledger is not None:
                self.ledger.start(self.id)
            logger.info("registered with the controller at %s%s", self.url,
                        f"; draining at {drain_time_text(self.drain.drain_at)}"
                        if self.drain.drain_at is not None else "")
            self.drain.start()
            clean = self.serve(reply.get("hb_period"))
            return 0
        except RegistrationFailed as e:
            logger.error("%s", e)
            clean = False
            return 1
        finally:
            self.close(clean)

    def serve(self, hb_period=None):
        """The message loop. Returns True on a clean leave (replies worth delivering)."""
        limit = self.timeout
        if hb_period and limit < 3 * float(hb_period):
            limit = 3 * float(hb_period)
            logger.info("controller heartbeat period is %g s: waiting up to %g s of silence",
                        hb_period, limit)
        # zmq_poll itself: the Poller wrapper costs a few us on every task
        watch = [(s, zmq.POLLIN) for s in (self.main, self.direct, self.heart.pulses)
                 if s is not None]
        silence = 0.0
        while True:
            try:
                if self._stop_signal is not None:
                    self._leave(f"received {self._stop_signal}")
                    return True
                if self.drain.due():
                    self._drain_and_leave()
                    return True
                started = time.monotonic()
                ready = [s for s, _ in (zmq.zmq_poll(watch, 0) if self.queue else spin_poll(
                    watch, self._idle_poll_ms(), self._spin_until))]
                waited = time.monotonic() - started
                if not ready and not self.queue:
                    RECEIVE_POOL.trim()  # idle: free stream buffers go back to the system
                if self.heart.pulses in ready and self.heart.drain():
                    silence = 0.0
                elif not self.queue:
                    silence += waited
                self._read_all(ready)
                if self.queue:
                    self._run(self.queue.popleft())
                elif silence >= limit:
                    logger.warning("controller at %s silent for %g s; exiting", self.url, limit)
                    return False
            except EngineStop as e:
                self._leave(f"received {e}")
                return True
            except ShutdownRequested:
                self._leave("shutdown requested")
                return True
            except Exception as e:  # never let our own bug kill a long-lived engine
                logger.exception("internal error in the message loop (continuing): %s", e)

    def _idle_poll_ms(self):
        """How long an idle loop may sleep: a second, or until the drain time."""
        left = self.drain.seconds_left()
        return IDLE_POLL_MS if left is None else max(0, min(IDLE_POLL_MS, int(left * 1000) + 1))

    def _announce_drain(self, running):
        """Tell the controller we drain; it gives every other task of ours to other engines."""
        self.session.send(self.main, "drain_request", {
            "id": self.id, "drain_at": self.drain.drain_at, "running": running})

    def _drain_and_leave(self):
        """Between tasks after the drain time: refuse what waits here, unregister."""
        self.drain.announce_from_loop()
        self._read_all()
        refused, self.queue = list(self.queue), collections.deque()
        for msg in refused:
            self._reply(msg, refusal(self.id, self.drain.drain_at, msg))
        self._leave(f"drained before the batch job's walltime ends (drain time "
                    f"{drain_time_text(self.drain.drain_at)}; {len(refused)} queued task(s) "
                    "not started here)")

    def _leave(self, reason):
        logger.info("%s; unregistering and exiting", reason)
        if self.ledger is not None:
            self.ledger.close()  # the books of direct work first, then goodbye
        if self.id is not None:
            self.session.send(self.main, "unregistration_request", {"id": self.id})

    def close(self, deliver=True):
        """Close every socket; ``deliver`` waits (bounded) for the last replies to go out."""
        self._restore_signal_handlers()
        self.drain.stop()
        linger = LEAVE_LINGER_MS if deliver else 0
        heart_stopped = self.heart.stop()
        if self.ledger is not None:
            self.ledger.close()
        self.main.close(linger=linger)
        if self.direct is not None:
            self.direct.close(linger=linger)
        with self._iopub_lock:
            self.iopub.close(linger=linger)
        if heart_stopped:
            self.context.term()
        else:  # terminating would wait forever on the device's sockets; exiting frees them
            logger.warning("heartbeat device did not stop; leaving its sockets to process exit")

    # -- signals ------------------------------------------------------------
    def _install_signal_handlers(self):
        if threading.current_thread() is not threading.main_thread():
            return  # signals can only be handled in the main thread
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._old_handlers[sig] = signal.signal(sig, self._on_signal)

    def _restore_signal_handlers(self):
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        self._old_handlers.clear()

    def _on_signal(self, signum, frame):
        self._stop_signal = signal.Signals(signum).name
        if self._busy:
            raise EngineStop(self._stop_signal)  # interrupt the running task

    # -- reading --------------------------------------------------------------
    def _read_all(self, ready=None):
        """Drain the sockets (those in ``ready``, which a poll found readable, or all):
        queue work, serve control messages in arrival order. Work from the direct lane
        keeps its sender's routing id (``msg.idents``), which is how ``_reply`` knows to
        answer there."""
        for sock in (self.main, self.direct):
            if sock is not None and (ready is None or sock in ready):
                self._read(sock, sock is self.direct, known_ready=ready is not None)

    def _read(self, sock, direct=False, known_ready=False):
        # a socket a poll found readable has a message: ask only about the next ones
        # (getsockopt(EVENTS) costs ~2 us in pyzmq)
        while known_ready or has_message(sock):
            known_ready = False
            frames = recv_frames(sock, block=False)
            if direct:
                frames = self._streams.feed(frames)
                if frames is None:
                    continue
            msg = self._parse(frames)
            if msg is None:
                continue
            kind = msg.msg_type
            if direct and kind not in WORK_REQUESTS:
                self._reply(msg, error_content(ProtocolError(
                    f"the direct lane serves only {', '.join(WORK_REQUESTS)}; send {kind} "
                    "through the controller"), self.id))
            elif kind in WORK_REQUESTS:
                if direct:
                    self.ledger.request(msg)
                if self._abort_later.pop(msg.msg_id, None) is not None:
                    self._reply_aborted(msg)
                else:
                    self.queue.append(msg)
            elif kind in CONTROL_REQUESTS:
                self._run(msg)
            elif kind.endswith("_request"):
                self._reply(msg, error_content(
                    ProtocolError(f"engines do not serve {kind}; they serve "
                                        f"{', '.join(WORK_REQUESTS + CONTROL_REQUESTS)}"), self.id))
            else:
                self.bad.warning("dropped an unexpected message", kind)

    def _parse(self, frames):
        """A verified Message, or None (logged, rate-limited) for anything bad."""
        try:
            return self.session.unpack(frames)
        except Exception as e:
            rejected = unsigned_rejection(frames)  # (an unsigned message fails to verify)
            if rejected is not None:
                self.bad.warning("the controller refused a message we signed", rejected)
            else:
                self.bad.warning(f"dropped a bad message ({type(e).__name__})", str(e))
            return None

    # -- serving --------------------------------------------------------------
    def _run(self, msg):
        """Serve one request with output captured, status published, and a reply."""
        handler = getattr(self, "_do_" + msg.msg_type[: -len("_request")])
        work = msg.msg_type in WORK_REQUESTS
        if work and not self.drain.begin_task(msg.msg_id):
            self.queue.appendleft(msg)  # the drain began: the loop refuses it and leaves
            return
        started = utcnow()
        buffers = []
        publisher = self._stream_publisher(msg.header)
        try:
            with captured_output(publisher) as output:
                try:
                    self._busy = True
                    buffers = handler(msg) or []
                    content = {"status": "ok"}
                except (Exception, SystemExit, KeyboardInterrupt) as e:
                    buffers = []
                    content = error_content(e, self.id)
                finally:
                    self._busy = False
                    if work:
                        self.drain.end_task()
            metadata = reply_metadata(self.id, content["status"], started, utcnow(),
                                      output["stdout"], output["stderr"])
            self._reply(msg, content, metadata, buffers)
        finally:
            if publisher.busy_sent:
                self._publish("status", {"execution_state": "idle"}, msg.header)
        if msg.msg_type == "shutdown_request":
            raise ShutdownRequested()

    def _do_apply(self, msg):
        return self.kernel.apply(msg.buffers)

    def _do_execute(self, msg):
        self.kernel.execute(msg.content.get("code"), bool(msg.content.get("silent", False)))

    def _do_push(self, msg):
        self.kernel.push(msg.buffers)

    def _do_pull(self, msg):
        return self.kernel.pull(msg.content.get("names"))

    def _do_clear(self, msg):
        self.kernel.clear()

    def _do_shutdown(self, msg):
        """Nothing to do before the reply; _run raises ShutdownRequested after it."""

    def _do_abort(self, msg):
        ids = msg.content.get("msg_ids")
        if ids is None:
            aborted, self.queue = list(self.queue), collections.deque()
        else:
            wanted = set(ids)
            aborted = [m for m in self.queue if m.msg_id in wanted]
            self.queue = collections.deque(m for m in self.queue if m.msg_id not in wanted)
            for missing in wanted - {m.msg_id for m in aborted}:
                self._abort_later[missing] = True  # it may still be on its way
            while len(self._abort_later) > ABORT_MEMORY:
                self._abort_later.popitem(last=False)
        for m in aborted:
            self._reply_aborted(m)

    # -- sending --------------------------------------------------------------
    def _reply_aborted(self, msg):
        self._reply(msg, {"status": "aborted"})

    def _reply(self, msg, content, metadata=None, buffers=()):
        metadata = metadata or reply_metadata(self.id, content["status"])
        try:
            self._send_reply(msg, content, metadata, buffers)
        except Exception as e:  # e.g. a buffer zmq cannot send: still answer, with the error
            logger.error("could not send %s for %s: %s", reply_type(msg.msg_type), msg.msg_id, e)
            self._send_reply(msg, error_content(e, self.id), reply_metadata(self.id, "error"))

    def _send_reply(self, msg, content, metadata, buffers=()):
        """To the controller; or, for work that came on the direct lane, to the client,
        noting it in the ledger (the controller's books, sent in batches)."""
        if not msg.idents:
            self.session.send(self.main, reply_type(msg.msg_type), content, parent=msg,
                              metadata=metadata, buffers=buffers)
            return
        metadata["direct"] = True
        _, frames = self.session.pack(reply_type(msg.msg_type), content, msg, metadata, buffers,
                                      sign=False)  # signed as it goes: big buffers stream
        with self.ledger.replying:  # noted before the ledger answers a query that followed it
            send_message(self.direct, msg.idents, frames, self.session)
            if msg.msg_type in WORK_REQUESTS:  # the controller books work, not refusals
                self.ledger.reply(msg, metadata, frames[1:])
        if msg.metadata.get("answer_here"):  # a blocking call: the caller's next one follows
            self._spin_until = time.perf_counter() + SPIN_SECONDS

    def _publish(self, msg_type, content, parent):
        """Send on iopub from any thread (user threads print too)."""
        with self._iopub_lock:
            try:
                self.session.send(self.iopub, msg_type, content, parent=parent)
            except zmq.ZMQError as e:
                self.bad.warning("could not publish on iopub", str(e))

    def _stream_publisher(self, parent):
        return StreamPublisher(self._publish, parent)


class StreamPublisher:
    """Publishes a task's output; announces ``busy`` before its first line.

    Status goes out only around tasks that print: a no-op task then costs one
    message instead of three, and a watcher of printing tasks still sees
    busy / stream... / idle in order."""

    def __init__(self, publish, parent):
        self._publish = publish
        self._parent = parent
        self.busy_sent = False

    def __call__(self, name, text):
        if not self.busy_sent:
            self.busy_sent = True
            self._publish("status", {"execution_state": "busy"}, self._parent)
        self._publish("stream", {"name": name, "text": text}, self._parent)
