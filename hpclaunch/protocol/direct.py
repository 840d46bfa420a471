"""The direct lane: DirectView work that goes client -> engine without the controller's relay.

Why: through the controller every request and reply crosses two TCP hops and a third
Python process; a 100 MB push is sent twice and a no-op round trip pays the controller's
CPU on its critical path. On the direct lane the client sends a direct request (apply,
execute, push, pull) to a ROUTER the engine binds, and the engine answers there.

The controller still keeps the books: the engine notes each direct request it reads and
each reply it sends, as signed, and sends the notes in batches (engine/ledger.py). A
note keeps its buffers only up to ``COPY_LIMIT`` bytes: beyond that the controller keeps
the JSON frames (which its first MAC covers) and marks the buffers as not kept, so a
100 MB push or pull crosses the network once. Control requests, load-balanced tasks and
everything of a tunnelled client still go through the controller.
"""

from .bulk import nbytes
from .session import N_FIXED

#: Buffer bytes of one message the controller's books still keep (above: JSON frames only).
COPY_LIMIT = 1 << 20


def url_host(url):
    """The host of a ``tcp://host:port`` URL (an IPv6 address without its brackets)."""
    return url.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")


def direct_identity(engine_uuid):
    """The routing id an engine's direct port announces in its handshake; clients address
    the engine by it (they know its uuid from the engine list)."""
    return f"direct-{engine_uuid}".encode()


def kept_for_books(signed):
    """The frames of a direct request or reply the controller's books keep: ``signed`` is
    ``[sig, header, parent, metadata, content, *buffers]``."""
    return list(signed[:frames_kept(list(map(nbytes, signed)))])


def frames_kept(sizes):
    """How many of a direct message's frames (of these sizes in bytes, signature onward)
    the books keep: all, or the signature and JSON frames if the buffers exceed
    ``COPY_LIMIT``."""
    return N_FIXED if sum(sizes[N_FIXED:]) > COPY_LIMIT else len(sizes)


def buffers_left_out(signed):
    """True if ``signed`` (sig onward) was kept without its buffers: its signature
    has the second (buffer) MAC, yet no buffer frame follows."""
    return len(signed) == N_FIXED and len(signed[0]) == 128
