"""hpclaunch: a Python cluster (controller, engines, client views) on any HPC batch system.

Top-level names are imported lazily, so an engine process (``python -m
hpclaunch.engine``) never pays for the client or the launch layer.
"""

from ._version import __version__

_LAZY = {
    "Client": "hpclaunch.client",
    "DirectView": "hpclaunch.client",
    "AsyncResult": "hpclaunch.client",
    "AsyncMapResult": "hpclaunch.client",
    "LoadBalancedView": "hpclaunch.client",
    "Dependency": "hpclaunch.dependency",
    "require": "hpclaunch.dependency",
    "depend": "hpclaunch.dependency",
    "dependent": "hpclaunch.dependency",
    "Cluster": "hpclaunch.cluster",
    "error": "hpclaunch.error",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hpclaunch' has no attribute {name!r}")
    import importlib

    mod = importlib.import_module(module)
    value = mod if name == "error" else getattr(mod, name)
    globals()[name] = value
    return value
