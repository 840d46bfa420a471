"""Task dependencies: graph dependencies (``Dependency``) and functional ones (``@require``,
``@depend``, ``dependent``), with ipyparallel's names and rules.

A leaf module (it imports only ``hpclaunch.error``) because its wrappers travel with a task,
pickled by reference, and run on the engine: an engine must be able to import this without
pulling in the client. Graph dependencies never run anywhere; they only become the
``{ids, all, success, failure}`` metadata the controller's task scheduler reads.
"""

import functools
import re
import sys
import types

from .error import UnmetDependency

_MODULE_NAME = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def msg_ids_of(obj, what="a dependency"):
    """The msg_ids in ``obj``: a msg_id, an AsyncResult, a Dependency, or (nested) lists of
    those. Raises TypeError naming what it could not read, before anything is sent."""
    if isinstance(obj, str):
        return [obj]
    ids = getattr(obj, "msg_ids", None)   # an AsyncResult (duck-typed: no client import)
    if isinstance(ids, list) and all(isinstance(i, str) for i in ids):
        return list(ids)
    if isinstance(obj, (list, tuple, set, frozenset)):   # a Dependency is a set
        out = []
        for item in (sorted(obj) if isinstance(obj, (set, frozenset)) else obj):
            out.extend(msg_ids_of(item, what))
        return out
    raise TypeError(f"{what} must be msg_ids, AsyncResults, lists of them or a "
                    f"hl.Dependency; got {type(obj).__name__} {obj!r:.80}")


class Dependency(set):
    """A set of msg_ids a load-balanced task depends on, and how.

    ``all``: every one must be met (else any one); ``success``/``failure``: whether a
    dependency that succeeded / failed counts as met. Use as ``after=`` (run once they
    finished) or ``follow=`` (run on the engine where they ran).
    """

    def __init__(self, dependencies=(), all=True, success=True, failure=False):  # noqa: A002
        super().__init__(msg_ids_of(dependencies, "a Dependency's ids"))
        for name, value in (("all", all), ("success", success), ("failure", failure)):
            if not isinstance(value, bool):
                raise TypeError(f"Dependency {name}= must be True or False, not {value!r}")
        if not (success or failure):
            raise ValueError("a Dependency with success=False and failure=False can never be "
                             "met: set success=True and/or failure=True")
        self.all = all
        self.success = success
        self.failure = failure

    def as_dict(self):
        """The wire form (docs/protocol.md, request metadata ``after``/``follow``)."""
        return {"ids": sorted(self), "all": self.all, "success": self.success,
                "failure": self.failure}

    @property
    def msg_ids(self):
        return sorted(self)

    def __repr__(self):
        return (f"Dependency({sorted(self)!r}, all={self.all}, success={self.success}, "
                f"failure={self.failure})")

    def __reduce__(self):
        return (type(self), (sorted(self), self.all, self.success, self.failure))


def as_wire(value, name):
    """Request metadata for an ``after``/``follow`` flag: a dict, or None when empty."""
    if value is None:
        return None
    if isinstance(value, Dependency):
        return value.as_dict() if value else None
    ids = msg_ids_of(value, f"{name}=")
    return {"ids": list(dict.fromkeys(ids)), "all": True, "success": True,
            "failure": False} if ids else None


# -- functional dependencies: run on the engine -------------------------------------
def _namespace():
    """The namespace user code runs in: the engine's (it installs it as ``__main__``),
    or the caller's ``__main__`` when a decorated function is called locally."""
    return sys.modules["__main__"].__dict__


def _in_namespace(f, ns):
    """``f`` as if defined in ``ns``, the way the engine runs a top-level client function:
    a function from the client's ``__main__`` arrives with a private copy of its globals,
    and must see the names ``@require`` imported and the names pushed to the engine."""
    if not (isinstance(f, types.FunctionType) and f.__module__ == "__main__"):
        return f
    if f.__globals__ is ns:
        return f
    g = types.FunctionType(f.__code__, ns, f.__name__, f.__defaults__, f.__closure__)
    g.__kwdefaults__ = f.__kwdefaults__
    g.__qualname__ = f.__qualname__
    g.__dict__.update(f.__dict__)
    for name, value in f.__globals__.items():
        if not (name.startswith("__") and name.endswith("__")) and name not in ns:
            ns[name] = value
    return g


def _require(*names, **objects):
    """Import ``names`` into the namespace and bind ``objects`` there; a missing module is an
    unmet dependency, so the scheduler tries another engine."""
    ns = _namespace()
    for name in names:
        try:
            top = __import__(name)
        except ImportError as e:
            raise UnmetDependency(f"this engine cannot import {name!r}: {e}") from None
        ns[name.partition(".")[0]] = top
    for name, obj in objects.items():
        ns[name] = _in_namespace(obj, ns)
    return True


class dependent:  # noqa: N801 - ipyparallel's name
    """``f`` guarded by a check: calling it runs ``df(*dargs, **dkwargs)`` first and raises
    UnmetDependency if that is falsy (the scheduler then sends the task elsewhere)."""

    def __init__(self, _wrapped_f, _dependency_f, *dargs, **dkwargs):
        if not callable(_wrapped_f) or not callable(_dependency_f):
            raise TypeError("dependent(f, df, ...) needs two callables: the task and its check")
        self.f = _wrapped_f
        self.df = _dependency_f
        self.dargs = dargs
        self.dkwargs = dkwargs
        functools.update_wrapper(self, _wrapped_f)

    def __call__(self, *args, **kwargs):
        ns = _namespace()
        if not _in_namespace(self.df, ns)(*self.dargs, **self.dkwargs):
            name = getattr(self.df, "__name__", repr(self.df))
            raise UnmetDependency(f"{name}() returned a false value on this engine")
        return _in_namespace(self.f, ns)(*args, **kwargs)

    def __repr__(self):
        return f"<dependent {getattr(self.f, '__name__', self.f)!r} on {self.df!r}>"


def depend(f, *args, **kwargs):
    """Decorator: the task runs only on an engine where ``f(*args, **kwargs)`` is truthy."""
    if not callable(f):
        raise TypeError(f"@depend needs a callable check, not {f!r}")
    return lambda task: dependent(task, f, *args, **kwargs)


def require(*objects, **mapping):
    """Decorator: the task runs only on an engine that can import these modules.

    ``objects``: module names or modules (imported into the engine namespace) and
    functions (bound there under their ``__name__``); ``mapping``: name=object bindings.
    """
    names = []
    for obj in objects:
        if isinstance(obj, types.ModuleType):
            obj = obj.__name__
        if isinstance(obj, str):
            if not _MODULE_NAME.match(obj):
                raise ValueError(f"@require: {obj!r} is not a module name")
            names.append(obj)
        elif callable(obj) and isinstance(getattr(obj, "__name__", None), str):
            mapping[obj.__name__] = obj
        else:
            raise TypeError(f"@require takes module names, modules and functions; pass "
                            f"other objects by keyword (name=obj), got {type(obj).__name__}")
    return depend(_require, *names, **mapping)
