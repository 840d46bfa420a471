"""Views: the object user code sends work through (``rc[:]``, ``rc.direct_view()``).

``View`` holds what every view shares — the client, targets, the ``block`` flag and the
apply/map family — on top of two primitives a subclass provides: ``_really_apply`` (one
call) and ``_parallel_call`` (sequences split into chunks). DirectView sends to named
engines; LoadBalancedView (loadbalanced.py) lets the controller's scheduler pick.
"""

import abc
import builtins
import contextlib
import threading

from ..protocol import pack_apply, serialize
from .asyncresult import AsyncMapResult
from .map import as_sequence, check_lengths, map_chunk, partition
from .remotefunction import ParallelFunction, RemoteFunction


class View(abc.ABC):
    """Base of every view; ``block`` (default False) picks sync or async for apply/map."""

    def __init__(self, client, targets="all", block=False):
        self.client = client
        self.targets = targets
        self.block = block

    def __repr__(self):
        targets = self.targets if isinstance(self.targets, (int, str)) else list(self.targets)
        return f"<{type(self).__name__} {targets}>"

    def _block(self, block):
        return self.block if block is None else block

    # -- primitives ------------------------------------------------------------
    @abc.abstractmethod
    def _really_apply(self, f, args=(), kwargs=None, block=None):
        """Send ``f(*args, **kwargs)``; an AsyncResult, or its value when blocking."""

    @abc.abstractmethod
    def _parallel_call(self, f, sequences, mapping, dist, block):
        """Split ``sequences`` into chunks; run ``f(*chunk)`` (or map ``f`` over it)."""

    # -- apply and map -----------------------------------------------------------
    def apply(self, f, *args, **kwargs):
        """``f(*args, **kwargs)`` on the engines; blocks if ``self.block``."""
        return self._really_apply(f, args, kwargs)

    def apply_async(self, f, *args, **kwargs):
        return self._really_apply(f, args, kwargs, block=False)

    def apply_sync(self, f, *args, **kwargs):
        return self._really_apply(f, args, kwargs, block=True)

    def map(self, f, *sequences, block=None):
        """``list(map(f, *sequences))`` computed in parallel, results in order."""
        return self._parallel_call(f, sequences, mapping=True, dist="b", block=block)

    def map_async(self, f, *sequences):
        return self.map(f, *sequences, block=False)

    def map_sync(self, f, *sequences):
        return self.map(f, *sequences, block=True)

    def remote(self, block=None):
        """Decorator: calling the function runs it via ``apply``."""
        return lambda f: RemoteFunction(self, f, block=block)

    def parallel(self, dist="b", block=None):
        """Decorator: calling the function with sequences runs it on chunks of them."""
        return lambda f: ParallelFunction(self, f, dist=dist, block=block)

    # -- bookkeeping, delegated to the client -------------------------------------
    def abort(self, jobs=None, targets=None, block=None):
        targets = self.targets if targets is None else targets
        return self.client.abort(jobs=jobs, targets=targets, block=self._block(block))

    def wait(self, jobs=None, timeout=-1):
        return self.client.wait(jobs, timeout)

    def get_result(self, indices_or_msg_ids=None, block=None):
        return self.client.get_result(indices_or_msg_ids, block=block)

    def queue_status(self, targets=None, verbose=False):
        targets = self.targets if targets is None else targets
        return self.client.queue_status(targets=targets, verbose=verbose)

    def shutdown(self, targets=None, hub=False, block=None):
        targets = self.targets if targets is None else targets
        return self.client.shutdown(targets=targets, hub=hub, block=self._block(block))


def _first(values):
    return values[0]


class DirectView(View):
    """Work sent to specific engines. An int target gives unwrapped results; a list of
    targets (or 'all') gives a list with one entry per engine."""

    def _engines(self, targets=None):
        targets = self.targets if targets is None else targets
        return targets, self.client._build_targets(targets)

    def _send(self, msg_type, content, buffers, targets, block, fname, unwrap=None):
        targets, engines = self._engines(targets)
        block = self._block(block)
        ar = self.client._submit(msg_type, content, [(e, buffers) for e in engines], fname,
                                 single=isinstance(targets, int), unwrap=unwrap, wait=block)
        return ar.get() if block else ar

    def _really_apply(self, f, args=(), kwargs=None, block=None, targets=None):
        buffers = pack_apply(f, args, kwargs)  # raises SerializationError before any send
        return self._send("apply_request", {}, buffers, targets, block,
                          getattr(f, "__name__", "apply"))

    def _parallel_call(self, f, sequences, mapping, dist, block):
        if not sequences:
            raise ValueError("a parallel call needs at least one sequence")
        _, engines = self._engines()
        sequences = [as_sequence(s) for s in sequences]
        check_lengths(sequences)
        jobs = []
        for index, engine in enumerate(engines):
            chunks = [partition(s, index, len(engines), dist) for s in sequences]
            if not len(chunks[0]):
                continue
            args = (f, *chunks) if mapping else chunks
            jobs.append((engine, pack_apply(map_chunk if mapping else f, args)))
        name = getattr(f, "__name__", "map")
        block = self._block(block)
        ar = self.client._submit("apply_request", {}, jobs, name, ar_class=AsyncMapResult,
                                 dist=dist, wait=block)
        return ar.get() if block else ar

    # -- code and namespace ------------------------------------------------------
    def execute(self, code, silent=True, targets=None, block=None):
        """Run ``code`` in the engines' namespace; returns the AsyncResult (waited for,
        and its errors raised, when blocking)."""
        targets, engines = self._engines(targets)
        block = self._block(block)
        ar = self.client._submit("execute_request", {"code": code, "silent": bool(silent)},
                                 [(e, ()) for e in engines], "execute",
                                 single=isinstance(targets, int), wait=block)
        if block:
            ar.get()
        return ar

    def run(self, filename, targets=None, block=None):
        """Execute the contents of a local file on the engines."""
        with open(filename) as f:
            code = f.read()
        return self.execute(code, silent=True, targets=targets, block=block)

    def push(self, ns, targets=None, block=None):
        """Update the engines' namespace with the dict ``ns`` (pickled once for all)."""
        if not isinstance(ns, dict):
            raise TypeError(f"push needs a dict of names to values, not {type(ns).__name__}")
        return self._send("push_request", {}, serialize(ns), targets, block, "push")

    def pull(self, names, targets=None, block=None):
        """Values from the engines: a str gives the value, a list gives a list of values."""
        if isinstance(names, str):
            keys, unwrap = [names], _first
        else:
            keys, unwrap = list(names), list
            if not all(isinstance(k, str) for k in keys):
                raise TypeError(f"pull needs a name or a list of names, not {names!r}")
        return self._send("pull_request", {"names": keys}, (), targets, block, "pull",
                          unwrap=unwrap)

    def update(self, ns):
        return self.push(ns)

    def get(self, key_or_keys):
        return self.pull(key_or_keys, block=True)

    def __setitem__(self, key, value):
        self.push({key: value}, block=True)

    def __getitem__(self, key):
        return self.get(key)

    def scatter(self, key, seq, dist="b", flatten=False, targets=None, block=None):
        """Split ``seq`` across the engines, binding each part to ``key``; ``flatten``
        binds a one-item part to the item itself."""
        targets, engines = self._engines(targets)
        seq = as_sequence(seq)
        jobs = []
        for index, engine in enumerate(engines):
            part = partition(seq, index, len(engines), dist)
            if flatten and len(part) == 1:
                part = part[0]
            jobs.append((engine, serialize({key: part})))
        ar = self.client._submit("push_request", {}, jobs, "scatter")
        if self._block(block):
            ar.get()
            return None
        return ar

    def gather(self, key, dist="b", targets=None, block=None):
        """Pull ``key`` from each engine and join the parts (the inverse of scatter)."""
        targets, engines = self._engines(targets)
        ar = self.client._submit("pull_request", {"names": [key]}, [(e, ()) for e in engines],
                                 "gather", ar_class=AsyncMapResult, dist=dist, unwrap=_first)
        return ar.get() if self._block(block) else ar

    # -- control -------------------------------------------------------------------
    def clear(self, targets=None, block=None):
        targets = self.targets if targets is None else targets
        return self.client.clear(targets=targets, block=self._block(block))

    @contextlib.contextmanager
    def sync_imports(self, local=True, quiet=False):
        """Imports inside the ``with`` block also run on the engines::

            with rc[:].sync_imports():
                import numpy
        """
        if not local:
            raise ValueError("sync_imports(local=False) is not supported: the import "
                             "must succeed locally first")
        original_import = builtins.__import__
        caller, state = threading.get_ident(), threading.local()
        statements = []

        def view_import(name, globals=None, locals=None, fromlist=(), level=0):
            nested = getattr(state, "depth", 0)
            state.depth = nested + 1
            try:
                module = original_import(name, globals, locals, fromlist, level)
            finally:
                state.depth = nested
            if nested == 0 and level == 0 and threading.get_ident() == caller:
                names = [n for n in (fromlist or ()) if n != "*"]
                stmt = f"from {name} import {', '.join(names)}" if names else f"import {name}"
                if stmt not in statements:
                    statements.append(stmt)
                    if not quiet:
                        print(f"{stmt} on engine(s)")
            return module

        builtins.__import__ = view_import
        try:
            yield
        finally:
            builtins.__import__ = original_import
        if statements:
            self.execute("\n".join(statements), block=True)
