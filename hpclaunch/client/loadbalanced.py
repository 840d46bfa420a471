"""LoadBalancedView: tasks the controller's scheduler places on whichever engine is free.

Requests carry no ``metadata.engine``; they carry the view's flags instead (``targets``,
``after``, ``follow``, ``timeout``, ``retries``: docs/protocol.md, "Load-balanced tasks").
Every flag is checked when it is set and again per call, so bad input fails here, with
a message naming it, and never reaches the controller.
"""

import contextlib
import math
import numbers

from ..dependency import as_wire
from ..protocol import pack_apply
from .asyncresult import AsyncMapResult
from .map import as_sequence, check_lengths, map_chunk
from .packing import ChunkPacker
from .view import View

#: Automatic chunking aims at this many chunks per engine: enough that a slow engine
#: or an uneven item does not leave the others idle, few enough that per-task cost
#: (~100 us end to end) stays small next to the work.
CHUNKS_PER_ENGINE = 8

FLAGS = ("after", "follow", "timeout", "retries", "targets", "block")


def auto_chunksize(n_items, n_engines):
    """Items per task when the caller gave none: ~CHUNKS_PER_ENGINE chunks per engine."""
    return max(1, math.ceil(n_items / (max(1, n_engines) * CHUNKS_PER_ENGINE)))


def _check_timeout(value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < 0 \
            or not math.isfinite(value):
        raise ValueError(f"timeout must be a number of seconds >= 0 (or None: no timeout), "
                         f"got {value!r}")
    return float(value)


def _check_retries(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"retries must be an integer >= 0 (times a failed task is "
                         f"resubmitted), got {value!r}")
    return int(value)


def _check_chunksize(value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"chunksize must be a positive integer (items per task) or None "
                         f"(chosen from the item and engine counts), got {value!r}")
    return int(value)


class LoadBalancedView(View):
    """Work the controller's task scheduler places (``rc.load_balanced_view()``).

    Flags (``set_flags``, ``temp_flags`` or attributes): ``after`` / ``follow``
    (msg_ids, AsyncResults, lists of them or ``hl.Dependency``), ``timeout`` (seconds the
    task may wait for its dependencies or an engine), ``retries`` (resubmissions of a
    task that failed or whose engine died), ``targets`` (engine ids it may run on;
    None: any), ``block``.
    """

    def __init__(self, client, targets=None, block=False):
        super().__init__(client, targets, block)
        self.after = None
        self.follow = None
        self.timeout = None
        self.retries = 0

    def __repr__(self):
        where = "any engine" if self.targets is None else f"engines {self.targets}"
        return f"<LoadBalancedView on {where}>"

    # -- flags ------------------------------------------------------------------
    def __setattr__(self, name, value):
        check = _CHECKS.get(name)
        if check is not None:
            check(self, value)
        super().__setattr__(name, value)

    def set_flags(self, **flags):
        """Set several flags at once; unknown names raise KeyError before any is set."""
        unknown = sorted(set(flags) - set(FLAGS))
        if unknown:
            raise KeyError(f"unknown LoadBalancedView flag(s) {', '.join(unknown)}; the flags "
                           f"are {', '.join(FLAGS)}")
        for name, value in flags.items():
            _CHECKS[name](self, value)
        for name, value in flags.items():
            setattr(self, name, value)

    @contextlib.contextmanager
    def temp_flags(self, **flags):
        """``with view.temp_flags(retries=2): ...`` sets flags for the block only."""
        saved = {name: getattr(self, name) for name in FLAGS}
        self.set_flags(**flags)
        try:
            yield self
        finally:
            for name in FLAGS:
                object.__setattr__(self, name, saved[name])

    def _check_targets(self, targets):
        if targets is not None:
            self.client._build_targets(targets)

    def _check_block(self, block):
        if not isinstance(block, bool):
            raise ValueError(f"block must be True or False, got {block!r}")

    def _metadata(self):
        """The request metadata of one task under the current flags (only what is set)."""
        md = {}
        if self.targets is not None:
            md["targets"] = self.client._build_targets(self.targets)
        for name in ("after", "follow"):
            dep = as_wire(getattr(self, name), name)
            if dep is not None:
                md[name] = dep
        if self.timeout:
            md["timeout"] = self.timeout
        if self.retries:
            md["retries"] = self.retries
        return md

    def _engine_count(self):
        if self.targets is not None:
            return len(self.client._build_targets(self.targets))
        return len(self.client.ids)

    # -- apply --------------------------------------------------------------------
    def _really_apply(self, f, args=(), kwargs=None, block=None):
        md = self._metadata()
        buffers = pack_apply(f, args, kwargs)  # SerializationError before any send
        block = self._block(block)
        ar = self.client._submit("apply_request", {}, [(None, buffers)],
                                 getattr(f, "__name__", "apply"), balanced=md, single=True,
                                 wait=block)
        return ar.get() if block else ar

    # -- map ------------------------------------------------------------------------
    def map(self, f, *sequences, chunksize=None, ordered=True, block=None):
        """``list(map(f, *sequences))``, ``chunksize`` items per task (None: chosen from
        the item and engine counts). ``ordered`` applies to iterating the AsyncMapResult
        (False: items of each chunk as it finishes); ``get()`` is always in order."""
        return self._map(f, sequences, True, chunksize, ordered, block)

    def map_async(self, f, *sequences, chunksize=None, ordered=True):
        return self._map(f, sequences, True, chunksize, ordered, False)

    def map_sync(self, f, *sequences, chunksize=None, ordered=True):
        return self._map(f, sequences, True, chunksize, ordered, True)

    def imap(self, f, *sequences, chunksize=None, ordered=True):
        """An iterator of ``f``'s results: in order, or (``ordered=False``) as completed."""
        return iter(self._map(f, sequences, True, chunksize, ordered, False))

    def _parallel_call(self, f, sequences, mapping, dist, block):
        """ParallelFunction's entry: ``f(*chunk)`` per task (``mapping``: map ``f`` over it).
        Load balancing needs contiguous chunks, so ``dist`` must be 'b'."""
        if dist != "b":
            raise ValueError("a load-balanced parallel function splits sequences in "
                             "contiguous chunks: use dist='b'")
        return self._map(f, sequences, mapping, None, True, block)

    def _map(self, f, sequences, mapping, chunksize, ordered, block):
        if not callable(f):
            raise TypeError(f"map needs a callable, not {type(f).__name__}")
        if not sequences:
            raise ValueError("map needs at least one sequence")
        chunksize = _check_chunksize(chunksize)
        md = self._metadata()
        sequences = [as_sequence(s) for s in sequences]
        n = check_lengths(sequences)
        if chunksize is None:
            chunksize = auto_chunksize(n, self._engine_count())
        packer = ChunkPacker(map_chunk, f) if mapping else None
        jobs = []
        for lo in range(0, n, chunksize):
            chunks = [s[lo:lo + chunksize] for s in sequences]
            jobs.append((None, packer.pack(chunks) if mapping else pack_apply(f, chunks)))
        block = self._block(block)
        ar = self.client._submit("apply_request", {}, jobs, getattr(f, "__name__", "map"),
                                 ar_class=AsyncMapResult, balanced=md, ordered=ordered,
                                 wait=block)
        return ar.get() if block else ar


_CHECKS = {
    "after": lambda view, value: as_wire(value, "after"),
    "follow": lambda view, value: as_wire(value, "follow"),
    "timeout": lambda view, value: _check_timeout(value),
    "retries": lambda view, value: _check_retries(value),
    "targets": LoadBalancedView._check_targets,
    "block": LoadBalancedView._check_block,
}
