"""SHA-256 digests of large buffers, chunk by chunk, on two threads.

One HMAC pass over a 100 MB push costs ~55 ms on the sender and again on the receiver,
on one core. hashlib releases the GIL while it hashes a large chunk, so hashing fixed
chunks on a small pool uses both cores; the HMAC then covers the short list of chunk
digests instead of the bytes (docs/protocol.md, "Signature"). Small messages never get
here: a thread hop costs more than hashing them.

That HMAC is keyed with a key derived from the cluster's (:func:`chunked_key`), not the key
itself: otherwise a small message whose one buffer *is* a large message's digest list would
carry the same MAC as the large one, and a peer that never saw the large message would
accept it.
"""

import concurrent.futures
import hashlib
import hmac
import os
import struct
import threading

import zmq

#: Buffers of a message are hashed in chunks when they hold at least this many bytes together.
CHUNKED_MIN = 8 * 1024 * 1024
#: Chunk size of the chunked form (part of the wire protocol: both ends must agree).
CHUNK = 4 * 1024 * 1024
#: Threads that hash chunks, shared by every Session of the process.
WORKERS = 2
#: What the cluster key MACs to make the key of the chunked form (domain separation).
KEY_LABEL = b"hpclaunch chunked buffers v1"

#: Chunks smaller than this (a buffer's tail, small buffers) are hashed by the calling thread.
POOL_MIN = 1024 * 1024

#: Types whose len() is their size in bytes.
_LEN_IS_SIZE = frozenset([bytes, bytearray, zmq.Frame])

_pool = None
_pool_lock = threading.Lock()


def nbytes(buf):
    """Bytes in one buffer (bytes, a memoryview of any format, a zmq Frame): every signed
    message with buffers asks, so the common types are sized without a memoryview."""
    kind = type(buf)
    return len(buf) if kind in _LEN_IS_SIZE else buf.nbytes if kind is memoryview \
        else memoryview(buf).nbytes


def total_nbytes(buffers):
    return sum(nbytes(b) for b in buffers)


def chunked_key(key):
    """The key of the chunked form's HMAC: HMAC-SHA256(key, KEY_LABEL)."""
    return hmac.digest(key, KEY_LABEL, "sha256")


def buffer_digests(buffers):
    """For each buffer in order, its length (8 bytes, big-endian) followed by the SHA-256
    digest of each consecutive ``CHUNK``-byte piece of it (the last may be shorter; an
    empty buffer has no piece). The lengths pin every frame boundary."""
    views = [_byte_view(b) for b in buffers]
    chunks = [v[i:i + CHUNK] for v in views for i in range(0, len(v), CHUNK)]
    digests = iter(_hash_all(chunks))
    parts = []
    for v in views:
        parts.append(struct.pack(">Q", len(v)))
        parts.extend(next(digests) for _ in range(0, len(v), CHUNK))
    return b"".join(parts)


def _byte_view(buf):
    view = memoryview(buf)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def _sha256(chunk):
    return hashlib.sha256(chunk).digest()


def _hash_all(chunks):
    """Digests of ``chunks`` in order: big ones on the pool, small ones (a thread hop would
    cost more than hashing them) here while the pool works."""
    pool = _shared_pool()
    futures = {}
    try:
        for i, c in enumerate(chunks):
            if len(c) >= POOL_MIN:
                futures[i] = pool.submit(_sha256, c)
    except RuntimeError:  # the interpreter is shutting down: threads take no new work
        pass
    digests = [None if i in futures else _sha256(c) for i, c in enumerate(chunks)]
    for i, future in futures.items():
        digests[i] = future.result()
    return digests


def _shared_pool():
    """The process's hashing pool, made on first use (never at import)."""
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = concurrent.futures.ThreadPoolExecutor(
                    WORKERS, thread_name_prefix="hpclaunch-hash")
    return _pool


def _forget_pool_in_child():
    """A forked child inherits the pool object but not its threads: it makes its own."""
    global _pool, _pool_lock
    _pool = None
    _pool_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_pool_in_child)
