"""Objects to frames and back: cloudpickle with pickle protocol 5.

Large contiguous buffers (numpy arrays; bytes and bytearrays up to two levels
deep in tuples, lists and dicts) leave the pickle as
out-of-band ``PickleBuffer``s and travel as their own zero-copy frames; the
receiver rebuilds them on top of the received frame memory.
"""

import io
import pickle

import cloudpickle

from ..error import SerializationError
from .fnpickle import Pickled, reusable

#: Buffers smaller than this stay inside the pickle (a frame has overhead too).
OOB_THRESHOLD = 64 * 1024


class _BigBytes:
    """Stands in for a large bytes/bytearray so it leaves the pickle out of band.

    The C pickler serializes exact bytes itself and never asks a reducer, so the
    containers a call travels in (args, kwargs, pushed dicts) are swapped shallowly."""

    __slots__ = ("data",)

    def __init__(self, data):
        self.data = data

    def __reduce_ex__(self, protocol):
        return _rebuild_bytes, (pickle.PickleBuffer(self.data), type(self.data) is bytes)


def _rebuild_bytes(buf, as_bytes):
    # buf is a view of the received frame; bytes must own their memory, so copy once
    return bytes(buf) if as_bytes else bytearray(buf)


def _swap_big_bytes(obj, threshold, depth=2):
    if type(obj) in (bytes, bytearray):
        return _BigBytes(obj) if len(obj) >= threshold else obj
    if depth == 0:
        return obj
    if type(obj) is tuple:
        return tuple(_swap_big_bytes(o, threshold, depth - 1) for o in obj)
    if type(obj) is list:
        return [_swap_big_bytes(o, threshold, depth - 1) for o in obj]
    if type(obj) is dict:
        return {k: _swap_big_bytes(v, threshold, depth - 1) for k, v in obj.items()}
    return obj


#: Results that pickle alike with pickle and cloudpickle and never leave a buffer out of band:
#: a no-op task's ``None`` needs no CloudPickler (whose set-up is most of a small serialize).
_PLAIN = frozenset([type(None), bool, int, float, complex, str])


def _plain(obj, depth=2):
    """True if ``obj`` is made of plain values only (at most two containers deep, small
    bytes): pickle and cloudpickle write it alike, in band."""
    kind = type(obj)
    if kind in _PLAIN:
        return True
    if kind in (bytes, bytearray):
        return len(obj) < OOB_THRESHOLD
    if depth == 0 or kind not in (tuple, list, dict):
        return False
    values = obj.values() if kind is dict else obj
    return all(_plain(v, depth - 1) for v in values) and (
        kind is not dict or all(type(k) is str for k in obj))


def serialize(obj, threshold=OOB_THRESHOLD):
    """Return ``[pickle, *buffers]``: the pickle bytes then out-of-band memoryviews."""
    if type(obj) in _PLAIN:
        return [pickle.dumps(obj, protocol=5)]
    buffers = []

    def keep(pb):
        view = pb.raw()
        if view.nbytes < threshold:
            return True  # serialize in band
        buffers.append(view)
        return False

    out = io.BytesIO()
    try:
        cloudpickle.CloudPickler(out, protocol=5, buffer_callback=keep).dump(
            _swap_big_bytes(obj, threshold))
    except Exception as e:
        raise SerializationError(f"cannot serialize {_describe(obj)}: {type(e).__name__}: {e}") from e
    return [out.getbuffer()] + buffers


def deserialize(frames):
    """Inverse of :func:`serialize`; ``frames`` may be zmq Frames or bytes."""
    if not frames:
        raise SerializationError("no frames to deserialize")
    try:
        return pickle.loads(frames[0], buffers=frames[1:])
    except Exception as e:
        raise SerializationError(f"cannot deserialize: {type(e).__name__}: {e}") from e


def pack_apply(f, args=(), kwargs=None):
    """Frames for ``f(*args, **kwargs)``. Fails before anything is sent, naming the culprit.
    ``f``'s pickle is reused from an earlier call when that is provably safe (fnpickle.py)."""
    kwargs = kwargs or {}
    call = (reusable(f), tuple(args), dict(kwargs))
    if type(call[0]) is Pickled and _plain(call[1]) and _plain(call[2]):
        return [pickle.dumps(call, protocol=5)]  # cloudpickle would write the same bytes
    try:
        return serialize(call)
    except SerializationError:
        pass
    # find which piece cannot be pickled, so the error names it
    for label, obj in _pieces(f, args, kwargs):
        try:
            serialize(obj)
        except SerializationError as e:
            raise SerializationError(f"{label} cannot be pickled: {e.__cause__ or e}") from e
    raise SerializationError(f"the call {getattr(f, '__name__', f)!r}(...) cannot be pickled")


def unpack_apply(frames):
    """Inverse of :func:`pack_apply`: ``(f, args, kwargs)``."""
    f, args, kwargs = deserialize(frames)
    return f, args, kwargs


def _pieces(f, args, kwargs):
    yield f"function {getattr(f, '__qualname__', repr(f))!r}", f
    for i, a in enumerate(args):
        yield f"argument {i} ({type(a).__name__})", a
    for k, v in kwargs.items():
        yield f"keyword argument {k!r} ({type(v).__name__})", v


def _describe(obj):
    text = repr(obj)
    text = text if len(text) < 80 else text[:77] + "..."
    return f"{type(obj).__name__} {text}"
