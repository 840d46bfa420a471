"""Registry of peers: name -> 'module:Class', imported lazily so that a peer whose package is
missing from this interpreter breaks only its own runs."""

import importlib

ADAPTERS = {
    "hpclaunch": "benchkit.adapters.hpclaunch:HpclaunchAdapter",
    "ipp": "benchkit.adapters.ipp:IppAdapter",
    "dask": "benchkit.adapters.dask:DaskAdapter",
    "pool": "benchkit.adapters.pool:PoolAdapter",
    "parsl": "benchkit.adapters.parsl:ParslAdapter",
}


def get_adapter(name):
    if name not in ADAPTERS:
        raise KeyError(f"unknown peer {name!r}; known: {', '.join(ADAPTERS)} (and zmq, run by zmq_ref.py)")
    module, cls = ADAPTERS[name].split(":")
    return getattr(importlib.import_module(module), cls)
