"""Starting and stopping cluster processes: batch systems, process records, state.

The launch layer has three axes (batch system x fan-out x job shape, see
DESIGN.md). ``LocalSystem`` is the batch system for this machine; cluster
systems register beside it with ``register`` and are found by name on reattach.
"""

from .base import BatchSystem, get_system, register
from .errors import (
    ClusterAlreadyRunning,
    ClusterNotRunning,
    ControllerStartError,
    EnginesStartError,
    LaunchError,
    describe_profile,
)
from .launcher import ClusterLauncher
from .local import LocalSystem
from .processes import ProcessRecord, tail, terminate
from .state import ClusterState, state_file

__all__ = [
    "BatchSystem", "ClusterAlreadyRunning", "ClusterLauncher", "ClusterNotRunning",
    "ClusterState", "ControllerStartError", "EnginesStartError", "LaunchError", "LocalSystem",
    "ProcessRecord", "describe_profile", "get_system", "register", "state_file", "tail",
    "terminate",
]
