"""``rc.results``: every result by msg_id, big ones only while someone holds them.

Why: ipyparallel's client keeps every result it ever received, so a loop that pulls a
100 MB array grows by 100 MB a turn until ``purge_local_results`` (ipyparallel issues 133,
151, 207: "memory leak"). Here a result whose reply carried ``BIG_RESULT`` bytes or more
stays in ``rc.results`` while the program holds it: the value itself, or else (a list,
bytes, a dict: values a weak reference cannot follow) the AsyncResult that fetched it.
Once nothing does, its memory goes, and a later big receive reuses it
(``protocol/recvpool.py``): 100 MB pulls need no fresh memory faulted in.

Small results, and every result under ``Client(keep_results=True)``, are kept as
ipyparallel keeps them. A released msg_id is remembered, so ``get_result`` can say what
became of it instead of a bare KeyError.
"""

import collections.abc
import weakref

from ..protocol.direct import COPY_LIMIT

#: Reply buffers (bytes) from which a result is held only while the program holds it: the
#: limit over which the controller keeps no copy of a direct-lane result either.
BIG_RESULT = COPY_LIMIT
_ABSENT = object()


class Results(collections.abc.MutableMapping):
    """A dict of msg_id -> value or exception, whose big entries are weak (see above)."""

    def __init__(self, keep_all=False):
        self.keep_all = keep_all
        self._kept = {}
        self._held = {}         # msg_id -> (weakref to the value or its AsyncResult, index)
        self._released = set()  # msg_ids whose big result was let go

    def record(self, msg_id, value, nbytes, ar=None):
        """Keep ``value`` (the result of ``msg_id``, whose reply carried ``nbytes`` of
        buffers): strongly if small, else weakly through the value or ``ar``."""
        if nbytes < BIG_RESULT or self.keep_all:
            self[msg_id] = value
            return
        try:
            ref, index = weakref.ref(value, self._releaser(msg_id)), None
        except TypeError:  # a list, tuple, bytes or dict: held through the AsyncResult
            index = ar._index.get(msg_id) if ar is not None else None
            if index is None:
                self[msg_id] = value
                return
            ref = weakref.ref(ar, self._releaser(msg_id))
        self._kept.pop(msg_id, None)
        self._held[msg_id] = (ref, index)

    def _releaser(self, msg_id):
        def released(ref):  # runs when the referent goes, on whichever thread drops it
            entry = self._held.get(msg_id)
            if entry is not None and entry[0] is ref:
                self._held.pop(msg_id, None)
                self._released.add(msg_id)
        return released

    def released(self, msg_id):
        """True if ``msg_id``'s big result was let go once nothing held it."""
        return msg_id in self._released

    def __getitem__(self, msg_id):
        try:
            return self._kept[msg_id]
        except KeyError:
            pass
        ref, index = self._held[msg_id]
        target = ref()
        if target is None:
            raise KeyError(msg_id)
        return target if index is None else target._results[index]

    def __setitem__(self, msg_id, value):
        self._held.pop(msg_id, None)
        self._kept[msg_id] = value

    def __delitem__(self, msg_id):
        kept = self._kept.pop(msg_id, _ABSENT)
        if self._held.pop(msg_id, None) is None and kept is _ABSENT:
            raise KeyError(msg_id)

    def __contains__(self, msg_id):
        if msg_id in self._kept:
            return True
        entry = self._held.get(msg_id)
        return entry is not None and entry[0]() is not None

    def __iter__(self):
        yield from list(self._kept)
        yield from [m for m, (ref, _) in list(self._held.items()) if ref() is not None]

    def clear(self):  # (MutableMapping's pops one key at a time, each making an iterator)
        self._kept.clear()
        self._held.clear()

    def __len__(self):
        return len(self._kept) + sum(1 for ref, _ in list(self._held.values())
                                     if ref() is not None)

    def __repr__(self):
        return f"Results({dict(self.items())!r})"
