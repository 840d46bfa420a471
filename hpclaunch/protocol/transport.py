"""Sending and receiving multipart messages with as little Python per frame as possible.

pyzmq's ``send_multipart``/``recv_multipart`` cost ~3x more per frame than the
Cython socket methods underneath (flag enums, copy thresholds, tracking); every
message crosses three processes, so the hot paths use these two functions.
Frames of 64 KiB and more, and received ``zmq.Frame``s, are sent zero-copy.
"""

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
