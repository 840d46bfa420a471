"""Signed multipart messages: building, signing, verifying and parsing.

Wire layout (the Jupyter messaging layout)::

    [routing ids..., b"<IDS|MSG>", signature, header, parent_header, metadata, content, buffers...]

The signature is the hex HMAC-SHA256 of header, parent_header, metadata, content
*and every buffer*, in that order. Buffers carry pickled code, so leaving them
unsigned (as the anchors do) would let anyone who can reach a socket run code.
"""

import collections
import hashlib
import hmac
import itertools
import json
import os
import time
import uuid
from json.encoder import c_make_encoder
from json.encoder import encode_basestring_ascii as _esc

from ..error import ProtocolError, SignatureError
from .bulk import (
    BULK_MIN,
    LENGTH,
    MAC_KEY_LABEL,
    ONE_TIME_KEY_LABEL,
    BuffersMAC,
    derived_key,
    nbytes,
    total_nbytes,
)
from .transport import send_frames

DELIM = b"<IDS|MSG>"
PROTOCOL_VERSION = "1.5"
SIGNATURE_SCHEME = "hmac-sha256"
#: Streamed messages whose check a receiver remembers until they are verified (vouch()).
MAX_VOUCHED = 64
#: Frames after the delimiter before buffers start: signature + 4 JSON dicts.
N_FIXED = 5
#: JSON frames above this size are refused before parsing (a header is tiny).
MAX_JSON_FRAME = 16 * 1024 * 1024
#: How many recent signatures a receiver remembers to reject replays.
REPLAY_HISTORY = 1 << 16


def new_key():
    """32 random bytes, hex encoded: the shared secret of one cluster."""
    return os.urandom(32).hex().encode("ascii")


# One encoder and one decoder for the process: json.dumps/loads with options build a new one
# per call, and bytes input pays for encoding detection (~10 us per message each way). The C
# encoder is called directly (JSONEncoder.encode builds it anew on every call) and without
# json's cycle check, whose memo dict every thread would share; a cycle then ends in a
# RecursionError, which _dumps reports as the ValueError json raises for a cycle.
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)
try:  # (markers, default, encoder, indent, key_sep, item_sep, sort_keys, skipkeys, allow_nan)
    _C_ENCODE = c_make_encoder(None, str, _esc, None, ":", ",", False, False, True)
except TypeError:  # no C accelerator, or another signature: JSONEncoder.encode does it all
    _C_ENCODE = None
_DECODER = json.JSONDecoder()
_SCAN = _DECODER.scan_once
#: Most parent headers, contents and metadata of a message are empty.
_EMPTY = b"{}"


def _dumps(obj):
    if type(obj) is dict and not obj:
        return _EMPTY
    if _C_ENCODE is None:
        return _ENCODER.encode(obj).encode("utf-8")
    try:
        return "".join(_C_ENCODE(obj, 0)).encode("ascii")
    except RecursionError:
        raise ValueError("Circular reference detected (or nesting too deep for JSON)") from None


def _loads(frame):
    data = frame if isinstance(frame, bytes) else frame.bytes
    if data == _EMPTY:
        return {}
    if len(data) > MAX_JSON_FRAME:
        raise ProtocolError(f"JSON frame of {len(data)} bytes exceeds {MAX_JSON_FRAME}")
    try:
        text = data.decode("utf-8")
        try:
            obj, end = _SCAN(text, 0)
        except StopIteration:
            end = -1
        if end != len(text):  # whitespace around it, or not JSON: json's own rules and errors
            obj = _DECODER.decode(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise ProtocolError(f"frame is not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"frame is JSON {type(obj).__name__}, expected an object")
    return obj


def utcnow():
    """Seconds since the epoch as a float: cheap to make, compare and store."""
    return time.time()


class Message:
    """A parsed message. ``frames`` keeps the signed frames (signature onward)
    exactly as received, so a router can forward or store them untouched."""

    __slots__ = ("idents", "header", "parent", "metadata", "content", "buffers", "frames")

    def __init__(self, idents, header, parent, metadata, content, buffers, frames):
        self.idents = idents
        self.header = header
        self.parent = parent
        self.metadata = metadata
        self.content = content
        self.buffers = buffers
        self.frames = frames

    @property
    def msg_type(self):
        return self.header["msg_type"]

    @property
    def msg_id(self):
        return self.header["msg_id"]

    def load_content(self):
        """Parse the content frame if ``unpack(content=False)`` skipped it."""
        if self.content is None:
            self.content = _loads(self.frames[4])
        return self.content

    @property
    def signature(self):
        f = self.frames[0]
        return f if isinstance(f, bytes) else f.bytes

    def __repr__(self):
        return f"<Message {self.header.get('msg_type')} {self.header.get('msg_id')}>"


class ReplayGuard:
    """Remembers the last ``size`` signatures; a repeat is a replay."""

    def __init__(self, size=REPLAY_HISTORY):
        self._seen = set()
        self._order = collections.deque()
        self._size = size

    def check_and_add(self, signature):
        if signature in self._seen:
            raise SignatureError("replayed message: this signature was already received")
        self._seen.add(signature)
        self._order.append(signature)
        if len(self._order) > self._size:
            self._seen.discard(self._order.popleft())


def split_idents(frames):
    """Split raw frames at the delimiter: (idents as bytes, signed frames)."""
    for i, f in enumerate(frames):
        data = f if isinstance(f, bytes) else f.bytes if len(f) == len(DELIM) else None
        if data == DELIM:
            return [_as_bytes(f) for f in frames[:i]], list(frames[i + 1:])
    raise ProtocolError("no <IDS|MSG> delimiter in message")


def _as_bytes(f):
    return f if isinstance(f, bytes) else f.bytes


class Session:
    """One side of the signed conversation: a key, a session id and a username.

    ``pack``/``send`` make signed frames; ``unpack`` verifies and parses them.
    One Session per process; it is cheap and keeps only the replay history.
    """

    def __init__(self, key, session=None, username=None, check_replay=True):
        if isinstance(key, str):
            key = key.encode("ascii")
        if not key:
            raise ValueError("a Session needs a non-empty key")
        self.key = key
        mac = hmac.new(key, digestmod=hashlib.sha256)
        # the C object under hmac's Python wrapper, where there is one: copy/update/hexdigest
        # without a Python frame each (a message makes ~7 such calls)
        self._mac = getattr(mac, "_hmac", None) or mac
        self._one_time_key_mac = hmac.new(derived_key(key, ONE_TIME_KEY_LABEL), digestmod=hashlib.sha256)
        self._bulk_mac = hmac.new(derived_key(key, MAC_KEY_LABEL), digestmod=hashlib.sha256)
        self.session = session or uuid.uuid4().hex
        self.username = username or os.environ.get("USER", "hpclaunch")
        self._counter = itertools.count(1)   # next() is atomic: threads may share a Session
        self.replay = ReplayGuard() if check_replay else None
        self._prefix = f"{self.session[:12]}_{os.getpid()}_"
        self._header_middle = (None, "")
        #: signature -> the buffer objects whose MAC a stream's receiver checked (vouch())
        self._vouched = collections.OrderedDict()

    # -- building ---------------------------------------------------------
    def new_msg_id(self):
        return f"{self._prefix}{next(self._counter)}"

    def header(self, msg_type, msg_id=None):
        return {
            "msg_id": msg_id or self.new_msg_id(),
            "msg_type": msg_type,
            "session": self.session,
            "username": self.username,
            "date": utcnow(),
            "version": PROTOCOL_VERSION,
        }

    def _own_header_frame(self, header):
        """The JSON of a header :meth:`header` just made, the same bytes as ``_dumps``: only
        msg_id, msg_type and date vary, so the rest is encoded once per session."""
        who = (self.session, self.username)
        encoded_for, middle = self._header_middle
        if encoded_for != who:
            middle = f',"session":{_esc(self.session)},"username":{_esc(self.username)},"date":'
            self._header_middle = (who, middle)
        return (f'{{"msg_id":{_esc(header["msg_id"])},"msg_type":{_esc(header["msg_type"])}'
                f'{middle}{header["date"]!r},"version":"{PROTOCOL_VERSION}"}}').encode("ascii")

    def sign(self, frames):
        """The signature of ``[header, parent, metadata, content, *buffers]``.

        Without buffers: the hex HMAC of the four JSON frames. With buffers: that, then a
        second hex HMAC (128 hex characters in all). The controller checks the first (it
        reads those frames, never the buffers); engines and clients, which unpickle
        buffers, check both. The second MAC covers every byte of every buffer:

        - buffers under ``bulk.BULK_MIN`` bytes together: the HMAC of the JSON frames
          followed by, for each buffer, its length (8 bytes, big-endian) and its bytes;
        - larger: the HMAC, under a key of its own, of the JSON frames followed by the
          Poly1305 tag of the buffers (``bulk.BuffersMAC``) under a one-time key, the HMAC
          of the JSON frames under a third key. Poly1305 is ~8x faster than SHA-256: a
          100 MB push is signed in ~8 ms instead of ~60."""
        h = self._mac.copy()
        for f in frames[:4]:
            h.update(f)
        if len(frames) <= 4:
            return h.hexdigest().encode("ascii")
        buffers = frames[4:]
        if total_nbytes(buffers) >= BULK_MIN:
            mac = self._buffers_mac(frames[:4], h.hexdigest())
            for buf in buffers:
                mac.buffer(buf)
            return mac.signature()
        head = h.hexdigest()
        for f in buffers:
            h.update(LENGTH.pack(nbytes(f)))
            h.update(f)
        return (head + h.hexdigest()).encode("ascii")

    def buffers_mac(self, body):
        """A BuffersMAC for a message of JSON frames ``body`` whose large buffers (together
        ``BULK_MIN`` bytes or more) come in pieces: stream.py signs and checks while the
        parts travel."""
        h = self._mac.copy()
        for f in body:
            h.update(f)
        return self._buffers_mac(body, h.hexdigest())

    def _buffers_mac(self, body, json_mac_hex):
        one_time = self._one_time_key_mac.copy()
        outer = self._bulk_mac.copy()
        for f in body:
            one_time.update(f)
            outer.update(f)
        return BuffersMAC(json_mac_hex, one_time.digest(), outer)

    def pack(self, msg_type, content=None, parent=None, metadata=None, buffers=(), header=None,
             sign=True):
        """Signed frames ``[DELIM, sig, header, parent, metadata, content, *buffers]``.

        ``parent`` may be a header dict or a Message, whose header frame is then sent as
        received (a reply need not encode its request's header again). ``sign=False``
        leaves ``sig`` None for ``stream.send_message`` to fill in (it signs big buffers
        as it sends them). Returns (header dict, frames list)."""
        if not header:
            header = self.header(msg_type)
            header_frame = self._own_header_frame(header)
        else:
            header_frame = _dumps(header)
        parent = parent.frames[1] if isinstance(parent, Message) else _dumps(parent or {})
        body = [header_frame, parent, _dumps(metadata or {}), _dumps(content or {})]
        buffers = list(buffers)
        sig = self.sign(body + buffers) if sign else None
        return header, [DELIM, sig] + body + buffers

    def send(self, socket, msg_type, content=None, parent=None, metadata=None,
             buffers=(), ident=None, header=None):
        """Sign and send; returns the header (its msg_id identifies the request)."""
        header, frames = self.pack(msg_type, content, parent, metadata, buffers, header)
        if ident is not None:
            frames = (list(ident) if isinstance(ident, (list, tuple)) else [ident]) + frames
        send_frames(socket, frames)
        return header

    # -- receiving --------------------------------------------------------
    def verify(self, signed_frames, check_replay=True, buffers=True):
        """Check the signature of ``[sig, header, parent, metadata, content, *buffers]``.

        ``buffers=False`` (the controller) checks only the MAC of the JSON frames, which
        authenticates everything it reads; the full MAC is left to whoever unpickles."""
        if len(signed_frames) < N_FIXED:
            raise ProtocolError(f"message has {len(signed_frames)} frames after the delimiter, "
                                f"expected at least {N_FIXED}")
        sig = _as_bytes(signed_frames[0])
        if not sig:
            raise SignatureError("unsigned message (empty signature frame)")
        if self._vouched and self._was_vouched(sig, signed_frames[N_FIXED:]):
            expected, sig = self.sign(signed_frames[1:N_FIXED]), sig[:64]
        elif buffers or (len(signed_frames) == N_FIXED and len(sig) != 128):
            expected = self.sign(signed_frames[1:])  # (128: a copy without its buffers)
        else:
            expected = self.sign(signed_frames[1:N_FIXED])
            sig = sig[:64] if len(sig) == 128 else b""
        if not hmac.compare_digest(sig, expected):
            raise SignatureError("signature did not verify: the sender used a different key "
                                 "(wrong or stale connection file?) or the message was altered")
        if check_replay and self.replay is not None:
            self.replay.check_and_add(sig[:64])
        return sig

    def vouch(self, sig, buffers):
        """A stream's receiver checked the whole signature ``sig`` over exactly these buffer
        objects as their parts came (stream.py): verify() need not MAC them again. Only
        those objects count, so nothing on the wire can claim the check."""
        self._vouched[sig] = buffers
        if len(self._vouched) > MAX_VOUCHED:  # never read (its message was dropped)
            self._vouched.pop(next(iter(self._vouched), None), None)

    def _was_vouched(self, sig, buffers):
        vouched = self._vouched.pop(sig, None)
        return vouched is not None and len(vouched) == len(buffers) and all(
            a is b for a, b in zip(vouched, buffers))

    def unpack(self, frames, check_replay=True, content=True, buffers=True):
        """Verify and parse raw frames (with routing ids) into a Message.

        ``content=False`` leaves the content frame unparsed (``msg.content`` is None) and
        ``buffers=False`` skips the MAC over buffers: for the controller, which forwards
        them untouched."""
        idents, signed = split_idents(frames)
        return self.unpack_signed(idents, signed, check_replay, content, buffers)

    def unpack_signed(self, idents, signed, check_replay=True, content=True, buffers=True):
        self.verify(signed, check_replay, buffers)
        header = _loads(signed[1])
        for key in ("msg_id", "msg_type", "session"):
            if not isinstance(header.get(key), str):
                raise ProtocolError(f"header lacks a string {key!r}")
        return Message(
            idents, header, _loads(signed[2]), _loads(signed[3]),
            _loads(signed[4]) if content else None,
            signed[N_FIXED:], signed,
        )


def json_frame(obj):
    """Encode one dict the way message frames are encoded (for tests and tools)."""
    return _dumps(obj)
