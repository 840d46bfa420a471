"""What the client does with every message it receives, and the books it keeps.

The Inbox owns no socket: the I/O thread hands it raw frames, it verifies them with the
Session and completes futures; user threads read the books (results, metadata,
outstanding, engine ids). Keeping it socket-free lets unit tests feed it signed frames
by hand. Bad frames are logged (rate-limited) and dropped: this runs on the I/O thread,
which must never die.
"""

import bisect
import collections
import concurrent.futures
import json
import logging
import threading
import time

from .. import error
from ..protocol import deserialize, split_idents
from ..protocol.bulk import total_nbytes
from ..protocol.ratelimit import RateLimitedLog
from .results import BIG_RESULT, Results

log = logging.getLogger("hpclaunch.client")

#: Keys of a stored task record (result_reply) copied into the client's metadata.
RECORD_KEYS = ("submitted", "engine_id", "started", "completed")


#: ``results.get``'s default: None is a result like any other.
_NOT_HERE = object()

#: How many task replies nobody was waiting for are kept (see ``Inbox.adopt``).
MAX_ORPHANS = 1024

#: An unsigned message is a tiny error report; anything bigger is not worth parsing.
MAX_UNSIGNED_FRAME = 64 * 1024


def _parse_unsigned(frame):
    data = frame if isinstance(frame, bytes) else frame.bytes
    if len(data) > MAX_UNSIGNED_FRAME:
        raise error.ProtocolError(f"unsigned frame of {len(data)} bytes is too big")
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise error.ProtocolError(f"frame is not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise error.ProtocolError("frame is not a JSON object")
    return obj


def new_metadata(msg_id, engine_id=None, submitted=None):
    """The metadata dict of one task, filled in as stream and reply messages arrive."""
    return {"msg_id": msg_id, "engine_id": engine_id, "submitted": submitted,
            "started": None, "completed": None, "received": None, "status": None,
            "stdout": "", "stderr": "", "error": None}


class HubRequest(concurrent.futures.Future):
    """A query to the controller; resolves to the reply Message.

    ``on_ok`` (optional) runs on the I/O thread before the future resolves, so state the
    reply carries (the engine list of a connect_reply) is applied in message order.
    """

    def __init__(self, msg_type, on_ok=None):
        super().__init__()
        self.set_running_or_notify_cancel()
        self.msg_type = msg_type
        self.msg_id = None  # set when sent
        self._on_ok = on_ok

    def _on_reply(self, msg):
        content = msg.content
        if content.get("status") == "ok":
            if self._on_ok is not None:
                try:
                    self._on_ok(msg)
                except Exception as e:  # a malformed reply: tell the caller, do not hang it
                    self.set_exception(error.ProtocolError(
                        f"the controller's {msg.msg_type} could not be used: {e!r}"))
                    return
            self.set_result(msg)
        else:
            self.set_exception(error.wrap_exception(content))


class Inbox:
    """Verify, route and record everything the controller sends this client."""

    def __init__(self, session, connection_file="the connection file", client=None,
                 keep_results=False):
        self.session = session
        self.connection_file = connection_file
        self.client = client
        self.pending = {}       # msg_id -> AsyncResult | HubRequest awaiting its reply
        self.results = Results(keep_all=keep_results)  # msg_id -> value or exception
        self.metadata = {}      # msg_id -> metadata dict
        self.outstanding = set()
        self.followers = {}     # msg_id -> [AsyncResult] also waiting (get_result)
        self.hub_watch = set()  # other clients' msg_ids still pending at the controller
        self.engines = {}       # id -> {uuid, hostname, pid}
        self.ids = []
        self.ids_changed = threading.Condition()
        self.connect_request = None  # the HubRequest of connect_request, until answered
        self.controller_shut_down = False
        self._follow_lock = threading.Lock()
        # the I/O thread and a thread reading its own replies (SyncChannel) both feed us
        self._lock = threading.Lock()
        self._log = RateLimitedLog(log, interval=5.0)
        # controller-made task failures for msg_ids not (yet) registered: a resubmitted task
        # the scheduler fails at once is answered before resubmit_reply names its new msg_id
        self.orphans = collections.OrderedDict()

    # -- entry point (I/O thread, or a SyncChannel borrower) ------------------------
    def on_frames(self, frames):
        with self._lock:
            self._on_frames(frames)

    def _on_frames(self, frames):
        try:
            idents, signed = split_idents(frames)
            if len(signed) >= 5 and len(signed[0]) == 0:
                self._on_unsigned(signed)
                return
            msg = self.session.unpack_signed(idents, signed)
        except error.SignatureError as e:
            self._on_bad_signature(e)
            return
        except error.ProtocolError as e:
            self._log.warning("dropped a malformed message", str(e))
            return
        try:
            self.on_message(msg)
        except Exception:
            log.exception("error while handling %r (dropped)", msg)

    def on_message(self, msg):
        msg_type = msg.header["msg_type"]
        if msg_type == "stream":
            self._on_stream(msg)
            return
        if msg_type == "status":
            return
        pending = self.pending.pop(msg.parent.get("msg_id"), None)
        if pending is not None:
            if type(pending) is HubRequest:
                pending._on_reply(msg)
            else:
                self._on_task_reply(pending, msg)
            return
        handler = self._NOTIFICATIONS.get(msg_type)
        if handler is not None:
            handler(self, msg)
        elif msg_type == "signature_error":
            self._on_signature_error(msg.parent, msg.content)
        elif (msg_type.endswith("_reply") and msg.metadata.get("engine_id") is None
              and msg.parent.get("msg_id") and not msg.buffers):
            self.orphans[msg.parent["msg_id"]] = msg
            if len(self.orphans) > MAX_ORPHANS:
                self.orphans.popitem(last=False)
        else:
            log.debug("dropped %s for unknown or finished request %s",
                      msg_type, msg.parent.get("msg_id"))

    # -- task replies -----------------------------------------------------------
    def _on_task_reply(self, ar, msg):
        msg_id = msg.parent["msg_id"]
        value = self.settle(msg_id, msg)
        value = ar._task_done(msg_id, value)
        self.results.record(msg_id, value, total_nbytes(msg.buffers) if msg.buffers else 0, ar)
        self.outstanding.discard(msg_id)
        if self.followers:
            self._feed_followers(msg_id, value)

    def adopt(self, ar, msg_ids):
        """Register ``ar`` as the owner of tasks it did not send (resubmitted ones); a reply
        that already arrived for one of them completes it now. Runs on the I/O thread."""
        now = time.time()
        for msg_id in msg_ids:
            self.metadata.setdefault(msg_id, new_metadata(msg_id, None, now))
            self.outstanding.add(msg_id)
            orphan = self.orphans.pop(msg_id, None)
            if orphan is None:
                self.pending[msg_id] = ar
            else:
                self._on_task_reply(ar, orphan)

    def settle(self, msg_id, msg):
        """Update the task's metadata from its reply; return its value or exception."""
        md = self.metadata.get(msg_id)
        if md is None:
            md = self.metadata[msg_id] = new_metadata(msg_id)
        content = msg.content
        status = content.get("status")
        md.update(msg.metadata)
        md["received"] = time.time()
        md["status"] = status
        if status == "ok":
            if not msg.buffers:
                return None
            try:
                return deserialize(msg.buffers)
            except error.SerializationError as e:
                md["error"] = e
                return e
        if status == "aborted":
            exc = error.TaskAborted(
                f"task {msg_id} was aborted on engine {md.get('engine_id')} before it ran")
        else:
            exc = error.wrap_exception(content, {"engine_id": md.get("engine_id")})
        md["error"] = exc
        return exc

    def _on_stream(self, msg):
        md = self.metadata.get(msg.parent.get("msg_id"))
        name = msg.content.get("name")
        if md is not None and md["received"] is None and name in ("stdout", "stderr"):
            md[name] += str(msg.content.get("text", ""))

    # -- followers: get_result on tasks this client is not the owner of -------------
    def follow(self, ar, msg_ids):
        """Have ``ar`` completed for ``msg_ids``; returns the ids the controller must supply."""
        to_fetch = []
        with self._follow_lock:
            for msg_id in msg_ids:
                self.followers.setdefault(msg_id, []).append(ar)
        for msg_id in msg_ids:
            value = self.results.get(msg_id, _NOT_HERE)
            if value is not _NOT_HERE:
                self._feed_followers(msg_id, value)
            elif msg_id not in self.pending:
                to_fetch.append(msg_id)
        return to_fetch

    def _feed_followers(self, msg_id, value):
        with self._follow_lock:
            ars = self.followers.pop(msg_id, ())
        for ar in ars:
            ar._task_done(msg_id, value)

    def abandon(self, msg_ids, exc):
        """Stop watching ``msg_ids`` at the controller and fail whoever waits for them."""
        for msg_id in msg_ids:
            self.hub_watch.discard(msg_id)
            self._feed_followers(msg_id, exc)

    def absorb_result_reply(self, msg):
        """Complete tasks from a result_reply: each stored reply is verified on its own."""
        content, buffers = msg.content, msg.buffers
        records = content.get("results") or {}
        pos = 0
        for msg_id in content.get("order") or []:
            entry = records.get(msg_id) or {}
            nframes = int(entry.get("nframes", 0))
            frames, pos = buffers[pos:pos + nframes], pos + nframes
            md = self.metadata.setdefault(msg_id, new_metadata(msg_id))
            record = entry.get("record") or {}
            md.update({k: record[k] for k in RECORD_KEYS if record.get(k) is not None})
            nbytes = 0
            try:
                stored = self.session.unpack_signed([], frames, check_replay=False)
                value = self.settle(msg_id, stored)
                nbytes = total_nbytes(stored.buffers)
            except (error.SignatureError, error.ProtocolError) as e:
                value = error.ProtocolError(f"the stored reply of {msg_id} is not valid: {e}")
            if getattr(value, "ename", None) == "ResultNotKept" and self.results.released(msg_id):
                value = error.ResultReleased(
                    f"the result of {msg_id} was let go when nothing held it any more: "
                    f"rc.results keeps a result of {BIG_RESULT >> 20} MiB or more only while "
                    "the program holds it or its AsyncResult, and the controller keeps none "
                    "that big from the direct lane. Keep a reference, or make the client "
                    "with Client(keep_results=True)")
            self.results.record(msg_id, value, nbytes)
            self.hub_watch.discard(msg_id)
            self._feed_followers(msg_id, value)
        self.hub_watch.update(m for m in content.get("pending") or [] if m not in self.results)

    # -- notifications ----------------------------------------------------------
    def set_engines(self, engines):
        with self.ids_changed:
            self.engines = {int(k): v for k, v in engines.items()}
            self.ids = sorted(self.engines)
            self.ids_changed.notify_all()

    def _on_registration(self, msg):
        c = msg.content
        eid = int(c["id"])
        with self.ids_changed:
            self.engines[eid] = {k: v for k, v in c.items() if k not in ("id", "registered")}
            if eid not in self.ids:
                ids = list(self.ids)
                bisect.insort(ids, eid)
                self.ids = ids  # replaced, never mutated: readers need no lock
            self.ids_changed.notify_all()

    def _on_unregistration(self, msg):
        eid = int(msg.content["id"])
        reason = msg.content.get("reason", "")
        with self.ids_changed:
            self.engines.pop(eid, None)
            self.ids = [i for i in self.ids if i != eid]
            self.ids_changed.notify_all()
        log.info("engine %s unregistered: %s", eid, reason)
        self._fail_direct_work(eid, reason)

    def _fail_direct_work(self, eid, reason):
        """Fail our direct-lane tasks that engine ``eid`` never answered: the controller
        answers only those in the books the engine sent it before it went."""
        for msg_id in [m for m in self.outstanding if self.metadata.get(m, {}).get("direct")
                       and self.metadata[m].get("engine_id") == eid]:
            ar = self.pending.pop(msg_id, None)
            if ar is None or type(ar) is HubRequest:
                continue
            exc = error.EngineError(f"engine {eid} is gone before answering {msg_id} (sent on "
                                    f"the direct lane): {reason}")
            md = self.metadata[msg_id]
            md["status"], md["error"] = "error", exc
            self.results[msg_id] = ar._task_done(msg_id, exc)
            self.outstanding.discard(msg_id)
            if self.followers:
                self._feed_followers(msg_id, exc)

    def _on_shutdown(self, msg):
        self.controller_shut_down = True
        log.info("the controller is shutting down")

    _NOTIFICATIONS = {
        "registration_notification": _on_registration,
        "unregistration_notification": _on_unregistration,
        "shutdown_notification": _on_shutdown,
    }

    # -- rejections -------------------------------------------------------------
    def _on_unsigned(self, signed):
        """An unsigned message is trusted only to report a signature_error."""
        try:
            header, parent, content = (_parse_unsigned(signed[i]) for i in (1, 2, 4))
        except error.ProtocolError as e:
            self._log.warning("dropped a malformed unsigned message", str(e))
            return
        if header.get("msg_type") != "signature_error":
            self._log.warning("dropped an unsigned message (only signature_error may be unsigned)",
                              str(header.get("msg_type")))
            return
        self._on_signature_error(parent, content)

    def _on_signature_error(self, parent, content):
        msg_id = parent.get("msg_id") if isinstance(parent, dict) else None
        evalue = content.get("evalue", "")
        connect = self.connect_request
        if connect is not None and msg_id == connect.msg_id:
            self.pending.pop(msg_id, None)
            connect.set_exception(error.SignatureError(
                f"the controller rejected this client's signature: the key in "
                f"{self.connection_file} does not match the running controller (stale or wrong "
                f"connection file?) [{evalue}]"))
            return
        pending = self.pending.pop(msg_id, None) if msg_id else None
        if pending is None:
            self._log.warning("the controller rejected a message's signature", str(evalue))
            return
        exc = error.SignatureError(
            f"the controller rejected the signature of request {msg_id}: {evalue} (is "
            f"{self.connection_file} the file of the running controller?)")
        if type(pending) is HubRequest:
            pending.set_exception(exc)
        else:
            self.metadata.get(msg_id, {})["error"] = exc
            self.results[msg_id] = pending._task_done(msg_id, exc)
            self.outstanding.discard(msg_id)

    def _on_bad_signature(self, exc):
        connect = self.connect_request
        if connect is not None and not connect.done():
            connect.set_exception(error.SignatureError(
                f"the controller's reply signature did not verify: the key in "
                f"{self.connection_file} is probably wrong or stale ({exc})"))
            return
        self._log.warning("dropped a message whose signature did not verify", str(exc))

    # -- shutdown ---------------------------------------------------------------
    def fail_all(self, exc):
        """Fail every pending future (the client is closing: nothing will answer them)."""
        pending, self.pending = self.pending, {}
        seen = set()
        for msg_id, waiter in pending.items():
            if type(waiter) is HubRequest:
                if not waiter.done():
                    waiter.set_exception(exc)
            elif id(waiter) not in seen:
                seen.add(id(waiter))
                waiter._fail_remaining(exc)
        with self._follow_lock:
            followers, self.followers = self.followers, {}
        for msg_id, ars in followers.items():
            for ar in ars:
                ar._task_done(msg_id, exc)
        self.outstanding.clear()
        self.hub_watch.clear()
