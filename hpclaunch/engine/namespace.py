"""The engine's one persistent namespace, and rebinding client functions into it.

ipyparallel semantics: a function the client defined in its ``__main__`` runs on
the engine *as if* it had been defined there. cloudpickle ships such a function
with a private globals dict holding only the names it referenced; we rebuild it
with ``globals = namespace`` so it sees pushed names and ``global x`` writes
land in the namespace, and we copy the names it captured (helpers, modules) into
the namespace without overwriting what the engine already has.
"""

import builtins
import types

#: Module name of functions that cloudpickle ships by value from an interactive client.
CLIENT_MAIN = "__main__"


def new_namespace(namespace=None):
    """Reset ``namespace`` in place (or make one): rebound functions keep pointing at it."""
    if namespace is None:
        namespace = {}
    namespace.clear()
    namespace["__name__"] = "__main__"
    namespace["__builtins__"] = builtins
    return namespace


def main_module():
    """A fresh ``__main__`` module whose ``__dict__`` is the engine namespace.

    Installed as ``sys.modules["__main__"]``, ``import __main__`` in user code
    sees the same names that push/pull/execute use, as in an interactive shell."""
    module = types.ModuleType("__main__")
    new_namespace(module.__dict__)
    return module


def is_client_function(obj):
    return isinstance(obj, types.FunctionType) and obj.__module__ == CLIENT_MAIN


def rebind(obj, namespace, _seen=None):
    """Return ``obj`` rebuilt to live in ``namespace`` if it is a client ``__main__`` function.

    Other objects come back unchanged. Captured globals that are themselves
    client functions are rebound too (once each), so a helper called from ``f``
    also sees the namespace."""
    if not is_client_function(obj):
        return obj
    if obj.__globals__ is namespace:
        return obj
    seen = {} if _seen is None else _seen
    if id(obj) in seen:
        return seen[id(obj)]
    new = types.FunctionType(obj.__code__, namespace, obj.__name__, obj.__defaults__, obj.__closure__)
    seen[id(obj)] = new
    new.__kwdefaults__ = obj.__kwdefaults__
    new.__qualname__ = obj.__qualname__
    new.__module__ = obj.__module__
    new.__doc__ = obj.__doc__
    new.__dict__.update(obj.__dict__)
    new.__annotations__ = dict(getattr(obj, "__annotations__", None) or {})
    for name, value in list(obj.__globals__.items()):
        if name.startswith("__") and name.endswith("__"):
            continue  # the client's __file__, __builtins__... are not ours
        if name not in namespace:
            namespace[name] = rebind(value, namespace, seen)
    return new


def rebind_call(f, args, kwargs, namespace):
    """Rebind ``f`` and any top-level client functions among its arguments."""
    if not args and not kwargs:
        return rebind(f, namespace), args, kwargs
    seen = {}
    f = rebind(f, namespace, seen)
    args = tuple(rebind(a, namespace, seen) for a in args)
    kwargs = {k: rebind(v, namespace, seen) for k, v in kwargs.items()}
    return f, args, kwargs


def rebind_values(values, namespace):
    """Rebind client functions among pushed values (``push(dict(f=f))``)."""
    seen = {}
    return {k: rebind(v, namespace, seen) for k, v in values.items()}
