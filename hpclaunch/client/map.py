"""Splitting sequences across engines and joining the pieces back (ipyparallel's rules).

Block distribution (``dist='b'``) gives each engine one contiguous chunk, the first
``len % parts`` chunks one item longer, so a map's results concatenate back in order.
Round-robin (``dist='r'``) deals items like cards; joining interleaves them again.
"""

from itertools import islice

def _make_map_chunk():
    # defined in a function body so cloudpickle ships it by value: the engine
    # never has to import hpclaunch.client to run a map
    def map_chunk(f, *chunks):
        return list(map(f, *chunks))

    return map_chunk


#: What a map sends to each engine: ``list(map(f, *chunk))``.
map_chunk = _make_map_chunk()


def as_sequence(obj):
    """Something with a length and slicing: iterators and generators become lists."""
    if hasattr(obj, "__len__") and hasattr(obj, "__getitem__"):
        return obj
    return list(obj)


def check_lengths(sequences):
    """All sequences of a map must be equally long (a silent truncation hides bugs)."""
    lengths = [len(s) for s in sequences]
    if len(set(lengths)) > 1:
        raise ValueError(f"all sequences must have the same length, got lengths {lengths}")
    return lengths[0] if lengths else 0


def block_bounds(length, parts):
    """``[(lo, hi)]`` for ``parts`` contiguous chunks; the first ``length % parts`` get one more."""
    if parts < 1:
        raise ValueError(f"cannot split into {parts} parts: need at least one engine")
    base, extra = divmod(length, parts)
    bounds, lo = [], 0
    for p in range(parts):
        hi = lo + base + (1 if p < extra else 0)
        bounds.append((lo, hi))
        lo = hi
    return bounds


def partition(seq, index, parts, dist="b"):
    """Chunk ``index`` of ``parts`` of ``seq`` (slices keep the type: list, tuple, ndarray)."""
    if not 0 <= index < parts:
        raise ValueError(f"partition index {index} is outside 0..{parts - 1}")
    if dist == "b":
        lo, hi = block_bounds(len(seq), parts)[index]
        try:
            return seq[lo:hi]
        except TypeError:
            return list(islice(seq, lo, hi))
    if dist == "r":
        try:
            return seq[index::parts]
        except TypeError:
            return list(islice(seq, index, None, parts))
    raise ValueError(f"unknown distribution {dist!r}: use 'b' (block) or 'r' (round robin)")


def _is_array(obj):
    return type(obj).__module__ == "numpy" and hasattr(obj, "ndim")


def concatenate(chunks):
    """Join per-engine results: arrays with numpy, lists/tuples flattened, scalars listed."""
    chunks = list(chunks)
    if not chunks:
        return []
    first = chunks[0]
    if _is_array(first):
        import numpy

        return numpy.concatenate(chunks)
    if isinstance(first, (list, tuple)):
        out = []
        for chunk in chunks:
            out.extend(chunk)
        return out
    return chunks


def join(chunks, dist="b"):
    """Inverse of partitioning: concatenate block chunks, interleave round-robin ones."""
    if dist != "r":
        return concatenate(chunks)
    chunks = [list(c) for c in chunks]
    out = []
    for i in range(max((len(c) for c in chunks), default=0)):
        out.extend(c[i] for c in chunks if i < len(c))
    return out
