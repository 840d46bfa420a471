"""Memory for big streamed buffers, reused once nothing but the pool holds it.

Why: the kernel zeroes fresh memory before a process may use it, and on the VMs measured
here that was most of receiving 100 MB: perf put 69% of a pulling client's CPU in
``clear_page``, more than moving and MACing the bytes. A stream's buffer goes to its
reader (a pushed numpy array is built on it); once the reader lets go, the next stream
of that size fills the same memory, already faulted in. Measured, 100 MB pushes
replacing one name: 1,090-1,390 -> 1,820-1,980 MB/s (3 interleaved pairs). Pulls gain as
much once the program drops what it pulled: the client keeps a big result only while
someone holds it (client/results.py), 1,030-1,230 -> 1,680-1,920 MB/s.

Whether a buffer is free is CPython's reference count: whoever uses a buffer's memory
(a memoryview, a numpy array, a PickleBuffer, a zero-copy zmq send) holds a reference to
it. Free buffers go back to the system once idle for ``IDLE`` seconds (``trim``, which the
engine's loop and the client's blocking calls call) and beyond ``MAX_FREE`` bytes.
"""

import mmap
import sys
import threading
import time

#: Bytes of free buffers kept at most.
MAX_FREE = 512 << 20
#: Seconds a free buffer is kept after it was last handed out.
IDLE = 2.0


class ReceivePool:
    def __init__(self, max_free=MAX_FREE, idle=IDLE):
        self.max_free = max_free
        self.idle = idle
        self._lock = threading.Lock()
        self._entries = []  # [buffer, size, when last handed out], oldest first
        self._next_trim = 0.0  # trim() looks at most this often (it runs on hot paths)

    def take(self, size):
        """A writable buffer of ``size`` bytes: a free one of that size, or a new one."""
        now = time.monotonic()
        with self._lock:
            self._trim(now)
            for entry in self._entries:
                if entry[1] == size and _free(entry):
                    entry[2] = now
                    return entry[0]
            buffer = _new(size)
            self._entries.append([buffer, size, now])
            return buffer

    def trim(self):
        """Let go of free buffers idle too long, or beyond ``max_free`` bytes. Cheap to
        call often: it looks at most every ``idle / 2`` seconds (the entries of results a
        client keeps stay listed, so a look is not free)."""
        now = time.monotonic()
        if self._entries and now >= self._next_trim:
            with self._lock:
                self._trim(now)

    def _trim(self, now):
        self._next_trim = now + self.idle / 2
        kept, free_bytes = [], 0
        for entry in reversed(self._entries):  # the most recently used are kept first
            if _free(entry):
                if now - entry[2] > self.idle or free_bytes + entry[1] > self.max_free:
                    continue  # unmapped as the last reference goes
                free_bytes += entry[1]
            kept.append(entry)
        self._entries = kept[::-1]

    def held(self):
        """(buffers, bytes) the pool holds, in use or free."""
        with self._lock:
            return len(self._entries), sum(e[1] for e in self._entries)


def _free(entry):
    # references: the entry's slot and getrefcount's own argument; any more is a user
    return sys.getrefcount(entry[0]) <= 2


def _new(size):
    """Private anonymous memory, on the page size the node's THP policy gives it ("always"
    on RHEL-family nodes: 2 MiB). We do not ask for huge pages ourselves: on a VM whose
    balloon reports free 2 MiB blocks to its host (ours), receives into fresh huge pages
    were 3-5x slower in about half the runs (bench/README.md, "Caveats")."""
    return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)


#: The process's pool (the Reassembler of every socket takes from it).
POOL = ReceivePool()
