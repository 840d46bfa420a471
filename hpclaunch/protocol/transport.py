"""Sending, receiving and waiting for multipart messages with as little Python per frame
as possible.

pyzmq's ``send_multipart``/``recv_multipart`` cost ~3x more per frame than the
Cython socket methods underneath (flag enums, copy thresholds, tracking); every
message crosses three processes, so the hot paths use these functions.
Frames of 64 KiB and more, and received ``zmq.Frame``s, are sent zero-copy.
"""

import logging
import os
import time

import zmq
from zmq.backend import Socket as _Base

_send = _Base.send
_recv = _Base.recv
_get = _Base.get
_MORE = int(zmq.SNDMORE)
_NOBLOCK = int(zmq.NOBLOCK)
_Frame = zmq.Frame
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
COPY_LIMIT = 65536


def send_frames(sock, frames):
    """Small frames are copied whatever their type: a zero-copy send hands the buffer's
    release to pyzmq's garbage-collector thread, a thread wake-up per frame (~100 us)."""
    last = len(frames) - 1
    for i, f in enumerate(frames):
        copy = type(f) is not _Frame and len(f) < COPY_LIMIT
        _send(sock, f, _MORE if i < last else 0, copy)


def has_message(sock):
    """True if a whole message is waiting: cheaper than a non-blocking recv that raises
    zmq.Again, which every drain loop would otherwise end with."""
    return _get(sock, _EVENTS) & _POLLIN


def recv_frames(sock, block=True):
    """One whole message as ``zmq.Frame``s (zero-copy); raises zmq.Again if not blocking
    and nothing is waiting. Each received Frame knows whether more follow (``more``), which
    spares a getsockopt(RCVMORE) per frame."""
    frame = _recv(sock, 0 if block else _NOBLOCK, False)
    parts = [frame]
    while frame.more:
        frame = _recv(sock, 0, False)
        parts.append(frame)
    return parts


def _spin_seconds(default_us=300.0):
    raw = os.environ.get("HPCLAUNCH_SPIN_US", "").strip()
    if not raw:
        return default_us * 1e-6
    try:
        return max(0.0, float(raw)) * 1e-6
    except ValueError:
        logging.getLogger("hpclaunch").warning(
            "HPCLAUNCH_SPIN_US=%r is not a number of microseconds; using %g", raw, default_us)
        return default_us * 1e-6


#: How long a thread that expects a message at once polls for it before it sleeps: a client
#: after sending a blocking call, an engine after answering one (the caller's next call
#: usually follows). Waking a sleeping thread costs ~20-100 us on a virtual machine, and a
#: round trip has two such wake-ups in Python; MPI libraries spin for the same reason.
#: ``HPCLAUNCH_SPIN_US=0`` turns it off (e.g. on nodes with more engines than cores).
SPIN_SECONDS = _spin_seconds()


def spin_poll(watch, timeout_ms, spin_until=0.0):
    """``zmq.zmq_poll(watch, timeout_ms)``, except that until ``spin_until`` (a
    ``time.perf_counter()`` time) it looks without sleeping, yielding the core to any
    other thread that wants it between looks."""
    while time.perf_counter() < spin_until:
        ready = zmq.zmq_poll(watch, 0)
        if ready:
            return ready
        _yield()
    return zmq.zmq_poll(watch, timeout_ms)


_yield = getattr(os, "sched_yield", None) or (lambda: time.sleep(0))  # (not on Windows)


def wake_pair(context, name):
    """``(reading end, writing end)`` of an inproc PAIR named ``name``: how one thread wakes
    another that blocks in poll on its sockets."""
    url = f"inproc://{name}"
    reading = context.socket(zmq.PAIR)
    reading.bind(url)
    writing = context.socket(zmq.PAIR)
    writing.setsockopt(zmq.LINGER, 0)
    writing.connect(url)
    return reading, writing
