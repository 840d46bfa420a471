"""The engine's books of direct-lane work, sent to the controller in batches.

Work on the direct lane (protocol/direct.py) never passes the controller, yet the
controller keeps the books (queue_status, get_result from other clients, EngineError
when the engine dies). Sending it a copy of every request and reply cost a no-op round
trip 10-20% on a 2-core node: each copy wakes the controller's two threads while the
client and engine wait for theirs. So the engine notes each direct request as it reads
it and each reply as it sends it, and a thread of its own sends the notes as one signed
``books`` message (docs/protocol.md, "The books of the direct lane"):

- at most ``FLUSH_AFTER`` seconds after the first unsent note, or at once past
  ``FLUSH_ENTRIES`` notes (it wakes once per batch, not per note), in messages of at most
  about ``FLUSH_BYTES`` bytes of frames;
- at once when the controller asks (``books_request``): it answers queries about the
  books only after every engine has sent what it holds. A reply the client already has
  must be in them: the main thread sends a reply and notes it holding ``replying``, which
  the answer waits for (else a client could see its result, ask queue_status, and find
  the task not yet completed);
- when the engine leaves.

The thread owns its own DEALER (routing id ``books-<uuid>``), so it serves the
controller while user code runs on the main thread.
"""

import threading
import time

import zmq

from ..protocol import make_curve_client, recv_frames, wake_pair
from ..protocol.bulk import nbytes
from ..protocol.direct import frames_kept
from ..protocol.session import N_FIXED
from .logs import logger

#: Longest a note waits before it is sent.
FLUSH_AFTER = 0.01
#: A batch goes at once when it holds this many notes.
FLUSH_ENTRIES = 256
#: Longest an answer to books_request waits for the main thread to note a reply it is
#: sending (a big reply streams for a while; the controller answers after BOOKS_WAIT, 1 s).
REPLY_WAIT = 0.5
#: One books message carries about this many bytes of frames at most (a note keeps at most
#: direct.COPY_LIMIT of buffers, so the main thread need not size what it notes).
FLUSH_BYTES = 8 << 20


class Ledger:
    """Notes from the main thread (``request``, ``reply``); shaping and sending on its own
    thread."""

    def __init__(self, context, url, identity, session, curve=None):
        self.identity = identity
        self.engine_id = None
        self._session = session
        self.socket = context.socket(zmq.DEALER)
        for opt, value in ((zmq.SNDHWM, 0), (zmq.RCVHWM, 0), (zmq.LINGER, 1000),
                           (zmq.IDENTITY, identity.encode())):
            self.socket.setsockopt(opt, value)
        make_curve_client(self.socket, curve)
        self.socket.connect(url)
        self._wake_in, self._wake_out = wake_pair(context, f"hpclaunch-ledger-{identity}")
        self._lock = threading.Lock()
        self.replying = threading.Lock()  # held by the main thread from a reply's send to its note
        self._raw = []                # (request header, reply metadata or None, frames)
        self._since = None            # when the oldest unsent note was made
        self._thread = threading.Thread(target=self._run, name="ledger", daemon=True)

    # -- the main thread ------------------------------------------------------
    def start(self, engine_id):
        self.engine_id = engine_id
        self._thread.start()

    def request(self, msg):
        """A direct work request was read (``msg`` as verified)."""
        self._note((msg.header, None, msg.frames))

    def reply(self, request, metadata, frames):
        """The reply to direct request ``request`` went out: ``frames`` from the signature on."""
        self._note((request.header, metadata, frames))

    def _note(self, raw):
        """Keep what a note needs (the ledger thread shapes it): the task's critical path
        pays only for an append."""
        with self._lock:
            first = not self._raw
            self._raw.append(raw)
            full = len(self._raw) >= FLUSH_ENTRIES
            if first:
                self._since = time.monotonic()
        if first or full:
            self._wake(b"full" if full else b"note")

    def _wake(self, what):
        try:
            self._wake_out.send(what, zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # closed: the engine is leaving

    def close(self):
        """Send what is left and stop the thread (the engine is leaving)."""
        if self._thread.is_alive():
            self._wake(b"stop")
            self._thread.join(5.0)
            if self._thread.is_alive():
                logger.warning("the ledger thread did not stop; unsent direct-lane books are lost")
        self._wake_out.close(linger=0)
        if not self._thread.is_alive():
            self._wake_in.close(linger=0)
            self.socket.close()

    # -- the ledger thread ------------------------------------------------------
    def _run(self):
        watch = [(self.socket, zmq.POLLIN), (self._wake_in, zmq.POLLIN)]
        self._send([], hello=True)  # the controller asks a ledger only once it heard from it
        while True:
            try:
                with self._lock:
                    since = self._since
                timeout = -1 if since is None else max(
                    0, int((since + FLUSH_AFTER - time.monotonic()) * 1000) + 1)
                ready = dict(zmq.zmq_poll(watch, timeout))
                stop = full = False
                if self._wake_in in ready:
                    woken = _drain(self._wake_in)
                    stop, full = b"stop" in woken, b"full" in woken
                tokens = self._asked() if self.socket in ready else []
                if tokens and self.replying.acquire(timeout=REPLY_WAIT):
                    self.replying.release()  # a reply being sent is noted by now
                due = since is not None and time.monotonic() >= since + FLUSH_AFTER
                if tokens or stop or full or due:
                    self._send(tokens)
                if stop:
                    return
            except zmq.ContextTerminated:
                return
            except Exception:  # never leave the books unsent for good over one bad message
                logger.exception("error in the ledger thread (continuing)")

    def _asked(self):
        """Tokens of the controller's books_request messages waiting on the socket."""
        tokens = []
        while self.socket.poll(0):
            frames = recv_frames(self.socket)
            try:
                msg = self._session.unpack(frames)
            except Exception as e:
                logger.warning("ledger: dropped a bad message from the controller (%s: %s)",
                               type(e).__name__, e)
                continue
            if msg.msg_type == "books_request":
                tokens.append(str(msg.content.get("token", "")))
            else:
                logger.warning("ledger: dropped an unexpected %s", msg.msg_type)
        return tokens

    def _send(self, tokens, hello=False):
        """Send what was noted, as books of at most about ``FLUSH_BYTES`` of frames; the
        controller's tokens go with the last, after every note it asked for."""
        with self._lock:
            raw, self._raw, self._since = self._raw, [], None
        books = list(batches(raw)) or [({}, [])]
        for i, (rows, frames) in enumerate(books):
            last = i == len(books) - 1
            if not rows and not (last and (tokens or hello)):
                continue
            # one buffer: signing and sending 12 small frames per task cost the GIL ~10x more
            self._session.send(self.socket, "books", {
                "id": self.engine_id, **rows, "answers": tokens if last else []},
                buffers=[b"".join(frames)] if frames else [])


def batches(raw):
    """``(rows, frames)`` of books, from ``Ledger._note``'s tuples in the order noted: rows
    ``{"requests": [...], "tasks": [...], "replies": [...]}`` as docs/protocol.md lists
    them, and their frames in that order. A request and its reply in one batch make one
    task row (most do: rows cost the controller per row). A batch closes once its frames
    reach ``FLUSH_BYTES``."""
    entries, replies, size = {}, [], 0     # msg_id -> [request row, frames, reply row, frames]
    for header, metadata, signed in raw:
        # (signature and JSON frames are bytes or zmq Frames; buffers may be views)
        sizes = [*map(len, signed[:N_FIXED]), *map(nbytes, signed[N_FIXED:])]
        kept = frames_kept(sizes)
        kept, sizes = signed[:kept], sizes[:kept]
        msg_id = header["msg_id"]
        if metadata is None:
            if msg_id not in entries:      # (noted twice: the first counts, as it does there)
                entries[msg_id] = [[msg_id, header["msg_type"], header["session"],
                                    header.get("date"), sizes], kept, None, None]
        else:
            row = [metadata["status"], metadata.get("started"), metadata.get("completed"),
                   metadata.get("stdout", ""), metadata.get("stderr", ""), sizes]
            entry = entries.get(msg_id)
            if entry is not None and entry[2] is None:
                entry[2:] = row, kept
            else:
                replies.append(([msg_id, *row], kept))
        size += sum(sizes)
        if size >= FLUSH_BYTES:
            yield _shaped(entries, replies)
            entries, replies, size = {}, [], 0
    if entries or replies:
        yield _shaped(entries, replies)


def _shaped(entries, replies):
    rows = {"requests": [], "tasks": [], "replies": []}
    frames = []
    for request, kept, reply, reply_kept in entries.values():
        if reply is None:
            rows["requests"].append(request)
            frames.extend(kept)
    for request, kept, reply, reply_kept in entries.values():
        if reply is not None:
            rows["tasks"].append(request + reply)
            frames.extend(kept)
            frames.extend(reply_kept)
    for row, kept in replies:
        rows["replies"].append(row)
        frames.extend(kept)
    return rows, frames


def _drain(sock):
    got = []
    while True:
        try:
            got.append(sock.recv(zmq.NOBLOCK))
        except zmq.Again:
            return got
