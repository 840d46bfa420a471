"""The client: what user code imports as ``hl.Client``, views and AsyncResults.

Imports only ``hpclaunch.protocol`` and ``hpclaunch.error``: it meets the controller
and the engines on the wire, never in Python.
"""

from .asyncresult import AsyncMapResult, AsyncResult
from .client import Client
from .loadbalanced import LoadBalancedView
from .remotefunction import ParallelFunction, RemoteFunction
from .view import DirectView, View

__all__ = ["AsyncMapResult", "AsyncResult", "Client", "DirectView", "LoadBalancedView",
           "ParallelFunction", "RemoteFunction", "View"]
