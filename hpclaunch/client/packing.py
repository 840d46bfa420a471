"""Cheap apply buffers for the many small tasks of a load-balanced map.

``pack_apply`` runs cloudpickle over the function for every message (~70 us for a
lambda), which caps a ``chunksize=1`` map at a few thousand tasks per second before the
wire is even involved. Here the function is cloudpickled once; each task's pickle embeds
those bytes as ``pickle.loads(<bytes>)`` and adds its chunk with the C pickler (~2 us).
The engine still unpickles ``(map_chunk, (f, chunk), {})``: the same apply_request
buffers as ``pack_apply`` makes (docs/protocol.md), so nothing changes on the wire, and
``f`` arrives as a top-level argument the engine rebinds into its namespace as usual.
"""

import pickle

import cloudpickle

from ..protocol import pack_apply, serialize
from ..protocol.fnpickle import Pickled
from ..protocol.serialize import OOB_THRESHOLD

#: Item types the standard pickler writes exactly as cloudpickle would (builtins only:
#: a class from the client's ``__main__`` must go by value, i.e. through cloudpickle).
_PLAIN = frozenset({int, float, complex, str, bool, type(None)})


def _pickled_function(f):
    """``f`` cloudpickled once; an unpicklable ``f`` raises pack_apply's error naming it."""
    try:
        return Pickled(cloudpickle.dumps(f, protocol=5))
    except Exception:
        pack_apply(f)  # raises SerializationError naming the culprit
        raise


def _is_plain(chunk):
    if type(chunk) is range:
        return True
    if type(chunk) not in (list, tuple):
        return False
    return all(map(_PLAIN.__contains__, map(type, chunk)))


class ChunkPacker:
    """Makes the apply buffers of ``runner(f, *chunks)`` for chunk after chunk."""

    def __init__(self, runner, f):
        self.runner = runner
        self.f = f
        self._prefix = (_pickled_function(runner), _pickled_function(f))

    def pack(self, chunks):
        """Buffers for one task: ``runner(f, *chunks)``; ``chunks`` is one slice per sequence."""
        if all(map(_is_plain, chunks)):
            runner, f = self._prefix
            buffers = []

            def keep(pb):
                view = pb.raw()
                if view.nbytes < OOB_THRESHOLD:
                    return True
                buffers.append(view)
                return False

            return [pickle.dumps((runner, (f, *chunks), {}), protocol=5,
                                 buffer_callback=keep)] + buffers
        return serialize((self.runner, (self.f, *chunks), {}))
