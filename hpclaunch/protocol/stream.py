"""Big buffers on the direct lane travel as a stream of part messages, not one frame.

Why: a 100 MB zmq frame lands in memory that libzmq has just allocated and frees
again after use, so every big receive faults its memory in anew, on libzmq's I/O thread,
before the receiver may look at a byte. Sent as 4 MiB parts, each lands in memory that
libzmq's allocator reuses, warm, and the receiver copies it into one buffer of its own
while the next part is on its way. Measured here with 100 MB, A/B in one sitting: push
630-660 MB/s as one frame (270-2,400 on huge pages) against 880-950 streamed; pull 610-670
against 840-990.

A streamed message, from one peer, on one socket, in order (zmq keeps a pair's order)::

    [routing ids..., b"<IDS|STREAM>", layout]          layout: (position, size) pairs
    [routing ids..., b"<IDS|PART>", bytes]  x k         the streamed buffers, in order
    [routing ids..., b"<IDS|MSG>", signature, ..., buffers not streamed]

``position`` is the buffer's index among the frames after the delimiter; the receiver puts
each streamed buffer back there, so the message it hands on is the message that was
signed, and is verified as usual. Nothing here is trusted: a stream that is malformed,
overflows its layout or is not finished when its message comes is dropped and reported.
"""

import collections
import mmap
import struct

from .bulk import byte_view, nbytes
from .session import DELIM, N_FIXED
from .transport import send_frames

STREAM = b"<IDS|STREAM>"
PART = b"<IDS|PART>"
#: A buffer of at least this many bytes is streamed.
STREAM_MIN = 8 * 1024 * 1024
#: Bytes in one part message.
PART_SIZE = 4 * 1024 * 1024
#: Unfinished streams a receiver keeps (one per peer; the oldest is dropped beyond).
MAX_OPEN = 64
#: Streamed buffers in one message at most, and bytes of one such buffer at most.
MAX_STREAMED = 1024
MAX_SIZE = 1 << 40
_PAIR = struct.Struct(">QQ")
_MARKERS = {len(m): m for m in (STREAM, PART)}


def send_message(sock, idents, frames):
    """Send ``[DELIM, sig, header, parent, metadata, content, *buffers]`` to ``idents``,
    streaming every buffer of ``STREAM_MIN`` bytes or more."""
    streamed = [i for i in range(N_FIXED + 1, len(frames)) if nbytes(frames[i]) >= STREAM_MIN]
    if not streamed:
        send_frames(sock, [*idents, *frames])
        return
    layout = b"".join(_PAIR.pack(i - 1, nbytes(frames[i])) for i in streamed)
    send_frames(sock, [*idents, STREAM, layout])
    for i in streamed:
        view = byte_view(frames[i])
        for offset in range(0, len(view), PART_SIZE):
            send_frames(sock, [*idents, PART, view[offset:offset + PART_SIZE]])  # zero-copy
    skip = set(streamed)
    send_frames(sock, [*idents, *(f for i, f in enumerate(frames) if i not in skip)])


class Reassembler:
    """Turns what one socket receives back into whole messages. ``on_bad(summary, detail)``
    hears of every dropped stream or part; the socket's reader keeps going."""

    def __init__(self, on_bad):
        self._open = collections.OrderedDict()  # peer (routing ids) -> _Stream
        self._on_bad = on_bad

    def feed(self, frames):
        """The whole message ``frames`` completes, or None (a stream's head or part,
        kept; or something dropped)."""
        if len(frames) > N_FIXED + 1 and not self._open:
            return frames  # (a routing id, DELIM, signature, 4 JSON frames): the fast path
        marker = _find_marker(frames)
        if marker is None:
            return frames  # no routing id + marker layout: the message's own reader judges it
        peer = tuple(f.bytes for f in frames[:marker])
        kind = frames[marker].bytes
        if kind == DELIM:
            stream = self._open.pop(peer, None)
            return frames if stream is None else self._complete(stream, frames, marker)
        if len(frames) != marker + 2:
            self._on_bad("dropped a malformed stream message", f"{len(frames)} frames")
            return None
        if kind == STREAM:
            self._start(peer, frames[marker + 1])
        else:
            self._add(peer, frames[marker + 1])
        return None

    def _start(self, peer, layout):
        try:
            stream = _Stream(_parse_layout(layout.bytes))
        except ValueError as e:
            self._on_bad("dropped a stream with a bad layout", str(e))
            return
        if self._open.pop(peer, None) is not None:
            self._on_bad("dropped an unfinished stream", "its sender began another")
        self._open[peer] = stream
        while len(self._open) > MAX_OPEN:
            self._open.popitem(last=False)
            self._on_bad("dropped an unfinished stream", f"more than {MAX_OPEN} were open")

    def _add(self, peer, part):
        stream = self._open.get(peer)
        if stream is None:
            self._on_bad("dropped a part of no stream", f"{len(part)} bytes")
        elif not stream.add(part):
            del self._open[peer]
            self._on_bad("dropped a stream", "a part overflows the sizes its layout gave")

    def _complete(self, stream, frames, marker):
        signed = frames[marker + 1:]
        if not stream.done():
            self._on_bad("dropped a message", "it came before its streamed buffers were complete")
            return None
        for position, buf in stream.placed():
            if position > len(signed):
                self._on_bad("dropped a message", "a streamed buffer's position is past its end")
                return None
            signed.insert(position, buf)
        return [*frames[:marker + 1], *signed]


def _find_marker(frames):
    """Index of the first frame that is STREAM, PART or DELIM, or None."""
    for i, f in enumerate(frames):
        if len(f) == len(DELIM) and f.bytes == DELIM:
            return i
        m = _MARKERS.get(len(f))
        if m is not None and f.bytes == m:
            return i
    return None


def _parse_layout(data):
    if not data or len(data) % _PAIR.size or len(data) // _PAIR.size > MAX_STREAMED:
        raise ValueError(f"{len(data)} bytes is not 1 to {MAX_STREAMED} (position, size) pairs")
    pairs = [_PAIR.unpack_from(data, o) for o in range(0, len(data), _PAIR.size)]
    last = N_FIXED - 1
    for position, size in pairs:
        if position <= last:
            raise ValueError("positions must rise and follow the JSON frames")
        if not 0 < size <= MAX_SIZE:
            raise ValueError(f"a streamed buffer of {size} bytes")
        last = position
    return pairs


class _Stream:
    """The buffers of one streamed message, filled part by part."""

    def __init__(self, layout):
        self._layout = layout
        self._buffers = []
        self._index = 0      # the buffer being filled
        self._filled = 0     # bytes of it so far

    def add(self, part):
        """Copy ``part`` in; False if it does not fit the layout."""
        n = len(part)
        if self._index >= len(self._layout):
            return False
        size = self._layout[self._index][1]
        if self._filled + n > size:
            return False
        if self._filled == 0:
            self._buffers.append(_allocate(size))
        self._buffers[-1][self._filled:self._filled + n] = part.buffer
        self._filled += n
        if self._filled == size:
            self._index, self._filled = self._index + 1, 0
        return True

    def done(self):
        return self._index == len(self._layout)

    def placed(self):
        """(position, buffer) for each streamed buffer, in rising position."""
        return [(position, memoryview(buf)) for (position, _), buf in
                zip(self._layout, self._buffers)]


def _allocate(size):
    """Private anonymous memory, on the page size the node's THP policy gives it ("always"
    on RHEL-family nodes: 2 MiB). We do not ask for huge pages ourselves: on a VM whose
    balloon reports free 2 MiB blocks to its host (ours), receives into fresh huge pages
    were 3-5x slower in about half the runs (bench/README.md, "Caveats")."""
    return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)
