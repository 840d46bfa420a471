"""The batch-system axis of the launch layer: where processes come from.

``local`` starts them on this machine. Slurm, PBS, SGE, LSF and SSH systems sit
beside it with the same three verbs (start, poll, stop), so the launcher that
composes a controller and engines does not care which one it drives.
"""

import abc


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


_SYSTEMS = {}


def register(cls):
    """Class decorator: make a batch system findable by its ``name``."""
    _SYSTEMS[cls.name] = cls
    return cls


def get_system(name):
    """A fresh instance of the batch system called ``name``."""
    try:
        return _SYSTEMS[name]()
    except KeyError:
        known = ", ".join(sorted(_SYSTEMS))
        raise ValueError(f"unknown batch system {name!r}; known: {known}") from None
