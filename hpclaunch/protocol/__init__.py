"""The wire: framing, signing, serialization and connection files.

Imports no other part of hpclaunch (only the leaf ``hpclaunch.error``); the
controller, engine and client meet here and nowhere else. The message catalogue
is in ``docs/protocol.md``.
"""

from .curve import listens_beyond_loopback, make_curve_client, new_curve_keys
from .connection import ensure_private_dir, read_connection_file, write_connection_file
from .session import (
    DELIM,
    N_FIXED,
    PROTOCOL_VERSION,
    SIGNATURE_SCHEME,
    Message,
    ReplayGuard,
    Session,
    json_frame,
    new_key,
    split_idents,
    utcnow,
)
from .serialize import deserialize, pack_apply, serialize, unpack_apply
from .transport import has_message, recv_frames, send_frames, wake_pair

#: First frame after the routing id of a heartbeat ping/pong (never a valid DELIM).
HEARTBEAT = b"\x00hb"

__all__ = [
    "DELIM", "HEARTBEAT", "N_FIXED", "PROTOCOL_VERSION", "SIGNATURE_SCHEME", "Message", "ReplayGuard",
    "Session", "deserialize", "ensure_private_dir", "json_frame", "new_key", "pack_apply",
    "listens_beyond_loopback", "make_curve_client", "new_curve_keys", "has_message", "read_connection_file", "recv_frames", "send_frames", "serialize", "split_idents", "unpack_apply", "utcnow", "wake_pair",
    "write_connection_file",
]
