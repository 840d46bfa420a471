"""Small message helpers the engine loop and registration share.

Kept apart from the loop so the rules (reply naming, reply metadata, how an
unsigned rejection is recognised) read in one place and are unit-testable.
"""

import json

from ..protocol import DELIM, utcnow

#: Requests that overtake queued work (served as soon as they are read).
CONTROL_REQUESTS = ("abort_request", "clear_request", "shutdown_request")
#: Requests that queue and run one at a time in the namespace.
WORK_REQUESTS = ("apply_request", "execute_request", "push_request", "pull_request")
#: An unsigned rejection's header is tiny; never parse more than this.
MAX_REJECTION_HEADER = 64 * 1024


def reply_type(msg_type):
    """``apply_request`` → ``apply_reply``; anything else gets ``_reply`` appended."""
    if msg_type.endswith("_request"):
        return msg_type[: -len("_request")] + "_reply"
    return msg_type + "_reply"


def reply_metadata(engine_id, status, started=None, completed=None, stdout="", stderr=""):
    """Reply metadata exactly as docs/protocol.md lists it (times: epoch floats)."""
    now = utcnow()
    return {
        "engine_id": engine_id,
        "started": now if started is None else started,
        "completed": now if completed is None else completed,
        "status": status,
        "stdout": stdout,
        "stderr": stderr,
    }


def unsigned_rejection(frames):
    """If ``frames`` is an unsigned ``signature_error``, return its evalue, else None.

    An unsigned message can carry nothing we act on; it only tells us the peer
    refused our signature (wrong key), which is worth a clear log line. Every message
    passes here, so a signed one is turned away by its signature frame's length (no copy)."""
    try:
        start = next(i for i, f in enumerate(frames)
                     if len(f) == len(DELIM) and _bytes(f) == DELIM) + 1
        signed = frames[start:]
        if len(signed) < 5 or len(signed[0]):
            return None
        header_raw = _bytes(signed[1])
        if len(header_raw) > MAX_REJECTION_HEADER:
            return None
        header = json.loads(header_raw)
        if not isinstance(header, dict) or header.get("msg_type") != "signature_error":
            return None
        content = json.loads(_bytes(signed[4])[:MAX_REJECTION_HEADER])
        evalue = content.get("evalue") if isinstance(content, dict) else None
        return str(evalue or "signature rejected")
    except (StopIteration, ValueError, UnicodeDecodeError):
        return None


def _bytes(frame):
    return frame if isinstance(frame, bytes) else frame.bytes
