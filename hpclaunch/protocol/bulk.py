"""The MAC of large buffers: Poly1305 under a key made for each message.

HMAC-SHA256 moves ~1.6 GB/s on one core of our nodes, so signing a 100 MB array and
verifying it again cost ~60 ms each: more than moving it. Poly1305 (OpenSSL's, through
``cryptography``, which paramiko already requires) moves ~12 GB/s. It is a one-time MAC:
a key must never authenticate two different messages. So each message's key is an HMAC,
under a key derived from the cluster's, of its four JSON frames, whose header carries a
msg_id that the sender never uses twice (docs/protocol.md, "Signature").

``cryptography`` is imported on the first large message, not before: it adds ~7 MB to a
process (an idle engine is ~27 MB) and ~30 ms to its start.
"""

import hmac
import struct

import zmq

#: Buffers of a message get the Poly1305 form when they hold at least this many bytes together
#: (below, one HMAC pass is cheaper than making a key; part of the wire protocol).
BULK_MIN = 256 * 1024
#: What the cluster key MACs to make the key of the one-time keys, and of the outer MAC.
ONE_TIME_KEY_LABEL = b"hpclaunch one-time buffer keys v1"
MAC_KEY_LABEL = b"hpclaunch bulk buffers v1"

#: A buffer's length in a MAC (8 bytes, big-endian): it pins every frame boundary.
LENGTH = struct.Struct(">Q")
#: Types whose len() is their size in bytes.
_LEN_IS_SIZE = frozenset([bytes, bytearray, zmq.Frame])
_poly1305 = None


def nbytes(buf):
    """Bytes in one buffer (bytes, a memoryview of any format, a zmq Frame): every signed
    message with buffers asks, so the common types are sized without a memoryview."""
    kind = type(buf)
    return len(buf) if kind in _LEN_IS_SIZE else buf.nbytes if kind is memoryview \
        else memoryview(buf).nbytes


def total_nbytes(buffers):
    return sum(nbytes(b) for b in buffers)


def derived_key(key, label):
    """HMAC-SHA256(key, label): keeps each use of the cluster key apart from the others."""
    return hmac.digest(key, label, "sha256")


class BuffersMAC:
    """The second MAC of a message whose buffers hold ``BULK_MIN`` bytes or more, fed the
    buffers in order, in as many pieces as they come (a streamed buffer part by part, see
    stream.py): Poly1305 under the message's one-time key of, for each buffer, its length
    (8 bytes, big-endian) and its bytes (the lengths pin every frame boundary); then the
    outer HMAC of the JSON frames and that tag. ``outer`` has the JSON frames already."""

    def __init__(self, json_mac_hex, one_time_key, outer):
        self._head = json_mac_hex
        self._poly = _poly1305_class()(one_time_key)
        self._outer = outer

    def length(self, n):
        """A buffer of ``n`` bytes begins; its bytes follow through ``update``."""
        self._poly.update(LENGTH.pack(n))

    def update(self, data):
        self._poly.update(data)

    def buffer(self, buf):
        """One whole buffer: its length and its bytes."""
        view = byte_view(buf)
        self._poly.update(LENGTH.pack(len(view)))
        self._poly.update(view)

    def signature(self):
        """The message's whole signature (both hex MACs), once every buffer went in."""
        self._outer.update(self._poly.finalize())
        return (self._head + self._outer.hexdigest()).encode("ascii")


def byte_view(buf):
    """A flat memoryview of ``buf``'s bytes, whatever its format."""
    view = memoryview(buf)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def _poly1305_class():
    global _poly1305
    if _poly1305 is None:
        from cryptography.hazmat.primitives.poly1305 import Poly1305
        _poly1305 = Poly1305
    return _poly1305
