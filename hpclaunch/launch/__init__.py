"""Starting and stopping cluster processes: batch systems, process records, state.

The launch layer has three axes (batch system x fan-out x job shape, see
DESIGN.md). ``LocalSystem`` is the batch system for this machine and
``SshSystem`` (engines on a host list) extends it; both register with
``register`` and are found by name on reattach. Schedulers run engines as jobs.
"""

from . import dialects, lsf, mpi, pbs, sge, slurm, ssh  # noqa: F401 - registers dialects, schedulers, ssh
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
from .jobs import JobRecord, JobState
from .local import LocalSystem
from .ssh import SshSystem
from .profile import Profile, ProfileError, load_profile, profile_file
from .render import TemplateError, plan_jobs
from .scheduler import SchedulerError
from .processes import ProcessRecord, tail, terminate
from .state import ClusterState, state_file

__all__ = [
    "BatchSystem", "ClusterAlreadyRunning", "ClusterLauncher", "ClusterNotRunning",
    "ClusterState", "ControllerStartError", "EnginesStartError", "JobRecord", "JobState",
    "LaunchError", "LocalSystem", "ProcessRecord", "Profile", "ProfileError", "SchedulerError",
    "SshSystem", "TemplateError", "describe_profile", "get_system", "load_profile", "plan_jobs",
    "profile_file", "register", "state_file", "tail", "terminate",
]
