"""The batch-system axis of the launch layer: where processes come from.

``local`` starts them on this machine. Slurm, PBS, SGE, LSF and SSH systems sit
beside it with the same three verbs (start, poll, stop), so the launcher that
composes a controller and engines does not care which one it drives.
"""

import abc
import os


class BatchSystem(abc.ABC):
    """Starts, polls and stops the processes (or jobs) of one cluster."""

    #: The name stored in the cluster state file, to pick the class again on reattach.
    name = None

    @abc.abstractmethod
    def start(self, argv, log_path, role, env=None):
        """Start ``argv`` with output to ``log_path``; return a ProcessRecord."""

    @abc.abstractmethod
    def is_running(self, record):
        """Whether what ``record`` names still runs."""

    @abc.abstractmethod
    def exit_code(self, record):
        """Its exit status once it has ended, or None when running or unknown."""

    @abc.abstractmethod
    def stop(self, records, grace=5.0):
        """End every record's process; return what could not be ended (empty on success)."""

    @classmethod
    def for_profile(cls, profile, profile_dir):
        """An instance for one profile's cluster (systems that reach other hosts need it)."""
        return cls()

    def running(self, records):
        """The records still running; systems that ask remote hosts batch this."""
        return [r for r in records if self.is_running(r)]

    def start_engines(self, argv, roles, logs_dir, env, on_started, existing=()):
        """Start one engine per role (log ``<logs_dir>/<role>.log``), calling
        ``on_started(record)`` as each starts so the launcher saves it at once. ``existing``:
        the cluster's engines so far (systems with several hosts spread over them)."""
        for role in roles:
            on_started(self.start(argv, os.path.join(logs_dir, f"{role}.log"), role, env=env))


_SYSTEMS = {}


def register(cls):
    """Class decorator: make a batch system findable by its ``name``."""
    _SYSTEMS[cls.name] = cls
    return cls


def get_system(name, profile=None, profile_dir=None):
    """A fresh instance of the batch system called ``name``, for ``profile``'s cluster."""
    cls = _SYSTEMS.get(name)
    if cls is None:
        known = ", ".join(sorted(_SYSTEMS))
        raise ValueError(f"unknown batch system {name!r}; known: {known}")
    return cls.for_profile(profile, profile_dir)


def runs_processes(name):
    """Whether batch system ``name`` starts engines as processes it tracks itself (local, ssh)
    rather than as jobs of a scheduler."""
    return name in _SYSTEMS
