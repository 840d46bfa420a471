"""Big buffers on the direct lane travel as a stream of part messages, not one frame.

Why: a 100 MB zmq frame lands in memory that libzmq has just allocated and frees
again after use, so every big receive faults its memory in anew, on libzmq's I/O thread,
before the receiver may look at a byte. Sent as 4 MiB parts, each lands in memory that
libzmq's allocator reuses, warm, and the receiver copies it into one buffer of its own
while the next part is on its way. Measured here with 100 MB, A/B in one sitting: push
630-660 MB/s as one frame (270-2,400 on huge pages) against 880-950 streamed; pull 610-670
against 840-990.

The buffer MAC (Poly1305, session.py) runs part by part on both ends too, while the other
parts travel, so the signature comes last. A streamed message, from one peer, on one
socket, in order (zmq keeps a pair's order)::

    [routing ids..., b"<IDS|STREAM>", layout, header, parent, metadata, content,
     buffers not streamed...]                           layout: (position, size) pairs
    [routing ids..., b"<IDS|PART>", bytes]  x k         the streamed buffers, in order
    [routing ids..., b"<IDS|MSG>", signature]

``position`` is the buffer's index among the frames after the delimiter of the whole
message; the receiver puts each streamed buffer back there, so the message it hands on is
the message that was signed. It checks the signature itself as the parts come and vouches
for those buffers (``Session.vouch``), so the reader's usual verify() skips their MAC.
Nothing here is trusted: a stream that is malformed, overflows its layout, is not finished
when its signature comes or does not verify is dropped and reported.
"""

import collections
import hmac
import struct

from .bulk import byte_view, nbytes
from .recvpool import POOL
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


def send_message(sock, idents, frames, session):
    """Send ``[DELIM, sig, header, parent, metadata, content, *buffers]`` to ``idents``,
    streaming every buffer of ``STREAM_MIN`` bytes or more. A ``sig`` of None (from
    ``Session.pack(sign=False)``) is made here, for a stream while its parts go out, and
    left in ``frames[1]``."""
    first = N_FIXED + 1
    streamed = {i for i in range(first, len(frames)) if nbytes(frames[i]) >= STREAM_MIN}
    if not streamed:
        if frames[1] is None:
            frames[1] = session.sign(frames[2:])
        send_frames(sock, [*idents, *frames])
        return
    # (streamed buffers hold over BULK_MIN bytes: the signature has the Poly1305 form)
    mac = session.buffers_mac(frames[2:first]) if frames[1] is None else None
    layout = b"".join(_PAIR.pack(i - 1, nbytes(frames[i])) for i in sorted(streamed))
    inline = [frames[i] for i in range(first, len(frames)) if i not in streamed]
    send_frames(sock, [*idents, STREAM, layout, *frames[2:first], *inline])
    for i in range(first, len(frames)):
        if i not in streamed:
            if mac is not None:
                mac.buffer(frames[i])
            continue
        view = byte_view(frames[i])
        if mac is not None:
            mac.length(len(view))
        for offset in range(0, len(view), PART_SIZE):
            part = view[offset:offset + PART_SIZE]
            if mac is not None:
                mac.update(part)
            send_frames(sock, [*idents, PART, part])  # zero-copy: libzmq sends while we MAC on
    if mac is not None:
        frames[1] = mac.signature()
    send_frames(sock, [*idents, DELIM, frames[1]])


class Reassembler:
    """Turns what one socket receives back into whole messages, checking a stream's
    signature with ``session`` as its parts come. ``on_bad(summary, detail)`` hears of
    every dropped stream or part; the socket's reader keeps going."""

    def __init__(self, on_bad, session):
        self._open = collections.OrderedDict()  # peer (routing ids) -> _Stream
        self._on_bad = on_bad
        self._session = session

    def feed(self, frames):
        """The whole message ``frames`` completes, or None (a stream's head or part,
        kept; or something dropped)."""
        if not self._open and len(frames) > N_FIXED + 1 and len(frames[1]) == len(DELIM):
            return frames  # (a routing id, DELIM, signature, 4 JSON frames): the fast path
        marker = _find_marker(frames)
        if marker is None:
            return frames  # no routing id + marker layout: the message's own reader judges it
        peer = tuple(f.bytes for f in frames[:marker])
        kind = frames[marker].bytes
        if kind == DELIM:
            stream = self._open.pop(peer, None)
            if stream is None:
                return frames
            if len(frames) != marker + 2:
                self._on_bad("dropped an unfinished stream", "a whole message came before "
                             "its signature")
                return frames
            return self._complete(stream, frames, marker)
        if kind == STREAM:
            self._start(peer, frames[marker + 1:])
        elif len(frames) != marker + 2:
            self._on_bad("dropped a malformed stream message", f"{len(frames)} frames")
        else:
            self._add(peer, frames[marker + 1])
        return None

    def _start(self, peer, head):
        try:
            if len(head) < N_FIXED:
                raise ValueError(f"a head of {len(head)} frames: the layout and the 4 JSON "
                                 "frames at least")
            body, inline = head[1:N_FIXED], head[N_FIXED:]
            layout = _parse_layout(head[0].bytes, len(inline))
            stream = _Stream(layout, body, inline, self._session.buffers_mac(body))
        except (ValueError, OSError) as e:  # (OSError: no memory for the buffer it announces)
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
            return
        try:
            fits = stream.add(part)
        except OSError as e:  # no memory for the next buffer its layout announced
            fits, why = False, f"its next buffer cannot be allocated: {e}"
        else:
            why = "a part overflows the sizes its layout gave"
        if not fits:
            del self._open[peer]
            self._on_bad("dropped a stream", why)

    def _complete(self, stream, frames, marker):
        if not stream.done():
            self._on_bad("dropped a message", "it came before its streamed buffers were complete")
            return None
        sig = frames[marker + 1]
        if not stream.verify(sig.bytes):
            self._on_bad("dropped a streamed message", "its signature did not verify: the "
                         "sender used a different key, or the message was altered")
            return None
        self._session.vouch(sig.bytes, stream.buffers)
        return [*frames[:marker + 1], sig, *stream.body, *stream.buffers]


def _find_marker(frames):
    """Index of the first frame that is STREAM, PART or DELIM, or None."""
    for i, f in enumerate(frames):
        if len(f) == len(DELIM) and f.bytes == DELIM:
            return i
        m = _MARKERS.get(len(f))
        if m is not None and f.bytes == m:
            return i
    return None


def _parse_layout(data, n_inline):
    """{position: size} of the streamed buffers; ``n_inline`` buffers came in the head."""
    if not data or len(data) % _PAIR.size or len(data) // _PAIR.size > MAX_STREAMED:
        raise ValueError(f"{len(data)} bytes is not 1 to {MAX_STREAMED} (position, size) pairs")
    pairs = [_PAIR.unpack_from(data, o) for o in range(0, len(data), _PAIR.size)]
    end = N_FIXED + n_inline + len(pairs)  # one past the message's last buffer
    last = N_FIXED - 1
    for position, size in pairs:
        if not last < position < end:
            raise ValueError("positions must rise, follow the JSON frames and stay among "
                             f"the message's {end - N_FIXED} buffers")
        if not 0 < size <= MAX_SIZE:
            raise ValueError(f"a streamed buffer of {size} bytes")
        last = position
    return dict(pairs)


class _Stream:
    """One streamed message: its head, then its buffers filled part by part, each byte
    MACed in the message's buffer order as it comes."""

    def __init__(self, layout, body, inline, mac):
        self.body = body
        n = len(inline) + len(layout)
        self._sizes = [layout.get(N_FIXED + i) for i in range(n)]  # None: came in the head
        inline = iter(inline)
        self.buffers = [next(inline) if size is None else None for size in self._sizes]
        self._mac = mac
        self._index = 0      # the buffer being filled (or MACed)
        self._filled = 0     # bytes of it so far
        self._advance()

    def _advance(self):
        """MAC the head's buffers up to the next streamed one, and open that one."""
        while self._index < len(self._sizes) and self._sizes[self._index] is None:
            self._mac.buffer(self.buffers[self._index])
            self._index += 1
        if self._index < len(self._sizes):
            size = self._sizes[self._index]
            self._mac.length(size)
            self.buffers[self._index] = POOL.take(size)  # warm memory when it can

    def add(self, part):
        """Copy ``part`` in and MAC it; False if it does not fit the layout."""
        n = len(part)
        if self._index >= len(self._sizes) or self._filled + n > self._sizes[self._index]:
            return False
        target = self.buffers[self._index]
        target[self._filled:self._filled + n] = part.buffer
        self._mac.update(memoryview(target)[self._filled:self._filled + n])  # warm, just written
        self._filled += n
        if self._filled == self._sizes[self._index]:
            self.buffers[self._index] = memoryview(target)
            self._index, self._filled = self._index + 1, 0
            self._advance()
        return True

    def done(self):
        return self._index == len(self._sizes)

    def verify(self, sig):
        return hmac.compare_digest(sig, self._mac.signature())
