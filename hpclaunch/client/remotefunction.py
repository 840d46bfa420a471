"""``@view.remote`` and ``@view.parallel``: functions that run on a view's engines.

They hold no logic of their own beyond the call convention; the view decides where the
work goes (DirectView: the named engines; a load-balanced view: wherever is free).
"""

import functools


class RemoteFunction:
    """Calling it runs ``f(*args, **kwargs)`` through ``view.apply``."""

    def __init__(self, view, f, block=None):
        self.view = view
        self.func = f
        self.block = block
        functools.update_wrapper(self, f)

    def __call__(self, *args, **kwargs):
        return self.view._really_apply(self.func, args, kwargs, block=self.block)

    def __repr__(self):
        return f"<{type(self).__name__} {getattr(self.func, '__name__', self.func)!r} on {self.view!r}>"


class ParallelFunction(RemoteFunction):
    """Calling it with sequences splits them across the engines and runs ``f(chunk...)``
    on each, joining the chunk results (``dist``: 'b' block, 'r' round robin).
    ``.map(*sequences)`` applies ``f`` elementwise instead."""

    def __init__(self, view, f, dist="b", block=None):
        if dist not in ("b", "r"):
            raise ValueError(f"unknown distribution {dist!r}: use 'b' (block) or 'r' (round robin)")
        super().__init__(view, f, block)
        self.dist = dist

    def __call__(self, *sequences):
        return self.view._parallel_call(self.func, sequences, mapping=False, dist=self.dist,
                                        block=self.block)

    def map(self, *sequences):
        return self.view._parallel_call(self.func, sequences, mapping=True, dist=self.dist,
                                        block=self.block)
