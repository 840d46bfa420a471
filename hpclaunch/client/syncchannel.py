"""The blocking-call shortcut: a thread that waits for its reply reads it itself.

A blocking ``apply_sync`` normally waits on a future that the I/O thread completes:
the reply wakes the I/O thread, which verifies it and wakes the caller, one more
thread hand-off on the critical path (about a fifth of a no-op round trip on a 2-core
node). The SyncChannel is a third DEALER for such calls. The calling thread borrows
it, sends with metadata ``answer_here`` (the controller then answers on this socket,
see docs/protocol.md) and reads until its future is done.

Work for one engine goes on the channel's DirectLane when it can (protocol/direct.py),
so the channel is two sockets: ``socket`` to the controller and ``lane.socket`` to the
engines; both are read together.

A blocking call on the direct lane sends the controller no copy of its request (a
non-blocking one does, client.py): it costs a message per call, and the engine's books
report the request within ~10 ms of reading it. But an engine busy with other work reads
nothing; so a call still unanswered after ``COPY_AFTER`` is copied to the controller
then, and queue_status shows it waiting.

Exactly one thread owns the sockets at a time: nobody (IDLE), a borrowing caller
(BORROWED) or, when a caller stopped waiting before every reply came (a timeout, an
interrupt), the I/O thread (WATCHED), which reads the late replies until none is
missing and then hands the channel back. A caller that finds the channel busy simply
takes the ordinary path.
"""

import threading
import time

import zmq

from ..protocol import DELIM, has_message, recv_frames, send_frames
from ..protocol.direct import kept_for_books
from ..protocol.recvpool import POOL as RECEIVE_POOL
from ..protocol.transport import SPIN_SECONDS, spin_poll
from .direct import DirectLane
from .iothread import dealer

IDLE, BORROWED, WATCHED = "idle", "borrowed", "watched"
#: Longest single wait in poll, so a caller notices a future failed by close().
POLL_SLICE_MS = 100
#: Seconds after which the requests of a blocking call still unanswered are copied to the
#: controller's books.
COPY_AFTER = 0.2


class SyncChannel:
    def __init__(self, context, url, curve, on_frames, pending, engines, session, direct=True):
        self.socket = dealer(context, url, curve)
        self.lane = DirectLane(context, curve, engines, session) if direct else None
        self.sockets = [self.socket] + ([self.lane.socket] if direct else [])
        self._watch = [(sock, zmq.POLLIN) for sock in self.sockets]
        self.state = IDLE
        self._state_lock = threading.Lock()
        self._on_frames = on_frames   # Inbox.on_frames: verifies and completes futures
        self._pending = pending       # Inbox.pending: msg_id -> future still waiting
        self._late = []               # msg_ids the I/O thread still has to collect
        self._unbooked = []           # (msg_id, signed frames) sent on the lane, not copied
        self.wake_io = None           # set by the client: makes the I/O thread look at us

    # -- the calling thread -----------------------------------------------------
    def try_borrow(self):
        with self._state_lock:
            if self.state != IDLE or self.socket.closed:
                return False
            self.state = BORROWED
            return True

    def sent_direct(self, msg_id, frames):
        """The borrower sent ``frames`` (signed, delimiter onward) on the lane: copied to
        the controller only if unanswered after COPY_AFTER."""
        self._unbooked.append((msg_id, frames))

    def wait(self, future, msg_ids):
        """Read replies until ``future`` is done, then give the socket back (to the I/O
        thread if some of ``msg_ids`` are still unanswered)."""
        watch = self._watch
        now = time.perf_counter()
        spin_until = now + SPIN_SECONDS
        copy_at = now + COPY_AFTER if self._unbooked else None
        try:
            while not future.done():
                timeout = POLL_SLICE_MS
                if copy_at is not None:
                    left = copy_at - time.perf_counter()
                    if left <= 0:
                        self._book_unanswered()
                        copy_at = None
                    else:
                        timeout = min(timeout, int(left * 1000) + 1)
                # zmq_poll itself: the Poller wrapper costs ~5 us a call, on every round trip.
                # One message per ready socket per poll: a no-op round trip then asks each
                # socket nothing beyond the poll (getsockopt(EVENTS) costs ~2 us in pyzmq).
                for sock, _ in spin_poll(watch, timeout, spin_until):
                    self._read_one(sock)
        finally:
            unanswered = [m for m in msg_ids if m in self._pending]
            if unanswered and self._unbooked:  # the caller gives up waiting, the books not
                self._book_unanswered()
            self._unbooked = []
            self._give_back(unanswered)
            RECEIVE_POOL.trim()  # stream buffers the caller let go of, idle too long

    def _book_unanswered(self):
        """Copy the lane requests still unanswered to the controller, for its books."""
        unbooked, self._unbooked = self._unbooked, []
        for msg_id, frames in unbooked:
            if msg_id in self._pending and not self.socket.closed:
                try:
                    send_frames(self.socket, [DELIM, *kept_for_books(frames[1:])])
                except zmq.ZMQError:  # closing: the books are the engine's ledger's to keep
                    return

    def _read_one(self, sock):
        """Read one message from ``sock``, which has one (the lane's through its
        Reassembler)."""
        frames = recv_frames(sock, block=False)
        if self.lane is not None and sock is self.lane.socket:
            frames = self.lane.streams.feed(frames)
            if frames is None:
                return
        self._on_frames(frames)

    def _read_waiting(self):
        for sock in self.sockets:
            while has_message(sock):
                self._read_one(sock)

    def _give_back(self, unanswered):
        leftover = not self.socket.closed and bool(zmq.zmq_poll(self._watch, 0))
        with self._state_lock:
            if unanswered or leftover:
                self._late = unanswered
                self.state = WATCHED
            else:
                self.state = IDLE
        if self.state == WATCHED and self.wake_io is not None:
            self.wake_io()

    # -- the I/O thread -----------------------------------------------------------
    @property
    def watched(self):
        return self.state == WATCHED

    def drain(self):
        """I/O thread, while WATCHED: read what arrived; True once nothing is missing
        (the channel is IDLE again and the I/O thread stops watching it)."""
        self._read_waiting()
        self._late = [m for m in self._late if m in self._pending]
        if self._late:
            return False
        with self._state_lock:
            self.state = IDLE
        return True

    def close(self):
        """Close the socket unless a caller is reading it (it then fails on its own)."""
        deadline = time.monotonic() + 1.0
        while self.state == BORROWED and time.monotonic() < deadline:
            time.sleep(0.01)
        for sock in self.sockets:
            sock.close(linger=0)
