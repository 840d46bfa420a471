"""Objects to frames and back: cloudpickle with pickle protocol 5.

Large contiguous buffers (numpy arrays, bytes, bytearrays) leave the pickle as
out-of-band ``PickleBuffer``s and travel as their own zero-copy frames; the
receiver rebuilds them on top of the received frame memory.
"""

import io
import pickle

import cloudpickle

from ..error import SerializationError

#: Buffers smaller than this stay inside the pickle (a frame has overhead too).
OOB_THRESHOLD = 64 * 1024


class _Pickler(cloudpickle.CloudPickler):
    """cloudpickle, plus: large bytes/bytearray go out of band like arrays do."""

    def reducer_override(self, obj):
        if type(obj) in (bytes, bytearray) and len(obj) >= OOB_THRESHOLD:
            return _rebuild_bytes, (pickle.PickleBuffer(obj), type(obj) is bytes)
        return super().reducer_override(obj)


def _rebuild_bytes(buf, as_bytes):
    # the buffer arrives as a memoryview over the frame; bytes() copies once,
    # which the receiver needs anyway because bytes must own their memory
    return bytes(buf) if as_bytes else bytearray(buf)


def serialize(obj, threshold=OOB_THRESHOLD):
    """Return ``[pickle, *buffers]``: the pickle bytes then out-of-band memoryviews."""
    buffers = []

    def keep(pb):
        view = pb.raw()
        if view.nbytes < threshold:
            return True  # serialize in band
        buffers.append(view)
        return False

    out = io.BytesIO()
    try:
        _Pickler(out, protocol=5, buffer_callback=keep).dump(obj)
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
    """Frames for ``f(*args, **kwargs)``. Fails before anything is sent, naming the culprit."""
    kwargs = kwargs or {}
    try:
        return serialize((f, tuple(args), dict(kwargs)))
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
