"""Pickles of functions, made once and reused while nothing they capture can have changed.

A client applies the same function again and again. One defined in ``__main__`` (a script,
a notebook) is pickled by value, and cloudpickle walks its code, globals and defaults each
time: ~100 us for a three-line function that uses numpy, on every ``apply``. Its bytes can be
reused only while they would come out the same, which is provable for a narrow, common kind
of function: no closure, no attributes, no annotations, and defaults and referenced globals
that are modules or immutable scalars. Its *fingerprint* (code object, names, docstring,
defaults, and each referenced global's module object or scalar value) then pins every byte
cloudpickle writes. Anything else is pickled afresh every time, as before.

A reused pickle travels as ``pickle.loads(<bytes>)`` inside the apply buffers, so the
engine unpickles the same objects and nothing changes on the wire.
"""

import pickle
import threading
import types
import weakref

import cloudpickle

#: Values whose == and type pin their pickle exactly (floats and complex numbers by repr:
#: -0.0 == 0.0, yet they pickle differently).
_SCALARS = frozenset({type(None), bool, int, str, bytes})
_BY_REPR = frozenset({float, complex})
#: Code objects whose global names are remembered (they are few: the functions a client uses).
MAX_CODES = 1024


class Pickled:
    """An object pickled already: it unpickles as ``pickle.loads(data)``."""

    __slots__ = ("data",)

    def __init__(self, data):
        self.data = data

    def __reduce__(self):
        return pickle.loads, (self.data,)


_lock = threading.Lock()
_pickles = weakref.WeakKeyDictionary()   # function -> (fingerprint, bytes)
_names = {}                              # code object -> global names it may read


def reusable(f):
    """``f``'s pickle as a :class:`Pickled` when it can be reused (made now if new or
    stale), else ``f`` itself, to be pickled as usual."""
    key = fingerprint(f)
    if key is None:
        return f
    with _lock:
        kept = _pickles.get(f)
    if kept is not None and kept[0] == key:
        return Pickled(kept[1])
    data = cloudpickle.dumps(f, protocol=5)
    with _lock:
        _pickles[f] = (key, data)
    return Pickled(data)


def fingerprint(f):
    """What pins ``f``'s pickle, or None if nothing short of pickling it can tell."""
    if type(f) is not types.FunctionType or f.__closure__ or f.__dict__ or f.__annotations__:
        return None
    defaults = _scalars(f.__defaults__ or ())
    kwdefaults = _scalars(f.__kwdefaults__.values()) if f.__kwdefaults__ else ()
    if defaults is None or kwdefaults is None:
        return None
    kwdefaults = (tuple(f.__kwdefaults__ or ()), kwdefaults)
    g = f.__globals__
    parts = [f.__code__, f.__name__, f.__qualname__, f.__module__, f.__doc__, defaults,
             kwdefaults, g.get("__name__"), g.get("__file__"), g.get("__package__")]
    for name in _global_names(f.__code__):
        if name not in g:
            continue  # a builtin: cloudpickle does not carry it either
        value = g[name]
        if isinstance(value, types.ModuleType):
            parts.append((name, value))  # by reference: its identity is what counts
        else:
            pinned = _scalar(value)
            if pinned is None:
                return None
            parts.append((name, pinned))
    return tuple(parts)


def _scalar(value):
    kind = type(value)
    if kind in _SCALARS:
        return (kind, value)
    if kind in _BY_REPR:
        return (kind, repr(value))
    if kind is tuple:
        inner = _scalars(value)
        return None if inner is None else (tuple, inner)
    return None


def _scalars(values):
    pinned = tuple(_scalar(v) for v in values)
    return None if None in pinned else pinned


def _global_names(code):
    """Every name ``code`` or a function nested in it may look up (a superset of what
    cloudpickle carries: attribute names are included, which only makes us cautious)."""
    names = _names.get(code)
    if names is None:
        found, todo = set(), [code]
        while todo:
            c = todo.pop()
            found.update(c.co_names)
            todo.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
        names = tuple(sorted(found))
        with _lock:
            if len(_names) >= MAX_CODES:
                _names.clear()
            _names[code] = names
    return names
