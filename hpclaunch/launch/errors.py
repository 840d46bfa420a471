"""Errors of the launch layer: each one says what went wrong and what to do next.

They live here, not in ``hpclaunch.error``, because only the launcher, the CLI and
the ``Cluster`` API raise or catch them; the wire parts never see them.
"""

import os

from ..error import HpclaunchError
from ..protocol import paths


class LaunchError(HpclaunchError):
    """Starting or stopping cluster processes failed."""


class ClusterAlreadyRunning(LaunchError):
    """A profile's controller is alive, so a second one would fight over its files."""

    def __init__(self, pdir, pid):
        self.pid = pid
        label, option = describe_profile(pdir)
        where = f"pid {pid}" if isinstance(pid, int) else pid
        super().__init__(f"a cluster for {label} is already running ({where}); "
                         f"hpclaunch stop {option} first")


class ClusterNotRunning(LaunchError):
    """There is nothing to stop or report on for this profile."""

    def __init__(self, pdir, note=""):
        label, option = describe_profile(pdir)
        super().__init__(f"no cluster is running for {label}{note}; "
                         f"start one with: hpclaunch start {option} -n N")


class ControllerStartError(LaunchError):
    """The controller died or never wrote its connection files."""


class EnginesStartError(LaunchError):
    """Not every engine registered in time; ``registered`` says how many did."""

    def __init__(self, message, registered=0, expected=0):
        super().__init__(message)
        self.registered = registered
        self.expected = expected


def describe_profile(pdir):
    """(words for messages, CLI option) naming the profile that lives in ``pdir``."""
    pdir = os.path.abspath(pdir)
    parent, base = os.path.split(pdir)
    if parent == paths.hpclaunch_dir() and base.startswith("profile_"):
        name = base[len("profile_"):]
        return f"profile '{name}'", f"--profile {name}"
    return f"profile dir {pdir}", f"--profile-dir {pdir}"
