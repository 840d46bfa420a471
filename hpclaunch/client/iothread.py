"""The client's I/O thread: owns the ``recv`` socket and feeds every message to the Inbox.

Replies complete futures here, so user code never has to spin. The thread sends
``connect_request`` on its own socket first, which tells the controller to route this
session's replies, iopub and notifications to it. An inproc PAIR wakes it (new work for
the periodic tick, or stop), so it can block in poll() without a timeout when idle.

It also reads the user threads' sockets, under their lock: the ``send`` DEALER (the
controller answers a rejected signature on the socket that sent the message, and a future
must not hang on an answer nobody reads) and their DirectLane, where engines answer work
sent on the direct lane (through the lane's Reassembler: big replies come in parts).
Only the sockets' file descriptors are polled (an OS call, not a socket operation), so
the two threads never use one socket at the same time.

The SyncChannel (blocking calls read their own replies) is watched only while a caller
left late replies on it; it is then the I/O thread's until none is missing.
"""

import itertools
import logging
import threading
import time

import zmq

from ..protocol import has_message, make_curve_client, recv_frames, wake_pair

log = logging.getLogger("hpclaunch.client")

_thread_numbers = itertools.count()


def dealer(context, url, curve=None):
    """A DEALER connected to the controller with the protocol's socket options
    (and CurveZMQ keys when the connection file has them)."""
    sock = context.socket(zmq.DEALER)
    make_curve_client(sock, curve)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(url)
    return sock


class IOThread(threading.Thread):
    """Receive loop. ``on_start(sock)`` runs first on the thread (sends connect_request);
    ``on_frames(frames)`` gets each message; ``on_tick()`` runs every ``tick_interval``
    seconds while ``wants_tick()`` is true (polling the controller for other clients'
    results)."""

    def __init__(self, context, url, on_start, on_frames, on_tick=None, wants_tick=None,
                 tick_interval=0.5, send_sockets=(), send_lock=None, curve=None,
                 sync_channel=None, streams=None):
        n = next(_thread_numbers)
        super().__init__(name=f"hpclaunch-client-io-{n}", daemon=True)
        self.recv_socket = dealer(context, url, curve)
        self._wake_in, self._wake_out = wake_pair(context, f"hpclaunch-client-wake-{id(self)}-{n}")
        self._wake_lock = threading.Lock()
        self._on_start, self._on_frames = on_start, on_frames
        self._on_tick, self._wants_tick = on_tick, wants_tick or (lambda: False)
        self.tick_interval = tick_interval
        self._send_sockets, self._send_lock = list(send_sockets), send_lock
        self._streams = streams or {}  # send socket -> its Reassembler (the direct lane's)
        self._sync = sync_channel  # watched only while it holds late replies (WATCHED)
        self.stopped = threading.Event()

    def run(self):
        recv, wake = self.recv_socket, self._wake_in
        try:
            self._on_start(recv)
            poller = zmq.Poller()
            poller.register(recv, zmq.POLLIN)
            poller.register(wake, zmq.POLLIN)
            send_fds = [s.getsockopt(zmq.FD) for s in self._send_sockets]
            for fd in send_fds:
                poller.register(fd, zmq.POLLIN)
            sync_socks = ()
            next_tick = 0.0
            while True:
                ticking = self._on_tick is not None and self._wants_tick()
                timeout = max(0.0, next_tick - time.monotonic()) * 1000 if ticking else None
                events = dict(poller.poll(timeout))
                if recv in events:
                    self._drain(recv)
                if wake in events and self._drain_wake(wake):
                    break
                if send_fds and (wake in events or any(fd in events for fd in send_fds)):
                    self._drain_send_sockets()
                if not sync_socks and self._sync is not None and self._sync.watched:
                    sync_socks = self._sync.sockets
                    for sock in sync_socks:
                        poller.register(sock, zmq.POLLIN)
                if sync_socks and self._safely(self._sync.drain):
                    for sock in sync_socks:
                        poller.unregister(sock)
                    sync_socks = ()
                if ticking and time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + self.tick_interval
                    self._safely(self._on_tick)
        except zmq.ContextTerminated:
            pass
        except Exception:
            log.exception("the client I/O thread stopped on an unexpected error")
        finally:
            recv.close(linger=0)
            wake.close(linger=0)
            self.stopped.set()

    def _drain(self, recv):
        on_frames = self._on_frames
        while has_message(recv):
            frames = recv_frames(recv, block=False)
            try:
                on_frames(frames)
            except Exception:
                log.exception("error while handling a message (dropped)")

    def _drain_send_sockets(self):
        """Read what arrived on the user threads' sockets (taking their lock briefly)."""
        batch = []
        with self._send_lock:
            if any(sock.closed for sock in self._send_sockets):  # closed together, by close()
                return
            for sock in self._send_sockets:
                streams = self._streams.get(sock)
                while has_message(sock):
                    frames = recv_frames(sock, block=False)
                    if streams is not None:
                        frames = streams.feed(frames)
                    if frames is not None:
                        batch.append(frames)
        for frames in batch:
            try:
                self._on_frames(frames)
            except Exception:
                log.exception("error while handling a message (dropped)")

    @staticmethod
    def _drain_wake(wake):
        stop = False
        while True:
            try:
                stop |= wake.recv(zmq.NOBLOCK) == b"stop"
            except zmq.Again:
                return stop

    @staticmethod
    def _safely(fn):
        try:
            return fn()
        except Exception:
            log.exception("error in the client's I/O thread (%s)", getattr(fn, "__name__", fn))

    def wake(self):
        """Make the loop re-check whether it should tick (e.g. a result is now watched)."""
        with self._wake_lock:
            if self._wake_out is not None:
                try:
                    self._wake_out.send(b"wake", zmq.NOBLOCK)
                except zmq.Again:
                    pass  # plenty of wakes are already queued

    def stop(self, timeout=5.0):
        """Stop the loop and close its sockets; safe to call twice, or from the thread itself."""
        with self._wake_lock:
            if self._wake_out is None:
                return True
            if self.is_alive():
                self._wake_out.send(b"stop")
            self._wake_out.close(linger=0)
            self._wake_out = None
        if not self.is_alive() and not self.stopped.is_set():
            # never started: close what run() would have closed
            self.recv_socket.close(linger=0)
            self._wake_in.close(linger=0)
            self.stopped.set()
            return True
        if threading.current_thread() is self:
            return False
        return self.stopped.wait(timeout)
