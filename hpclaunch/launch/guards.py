"""What keeps two clusters of one profile apart: the start lock, and telling a live
controller from a pid that the OS has since given to another process."""

import contextlib
import fcntl
import os
import time

from .errors import LaunchError, describe_profile


@contextlib.contextmanager
def start_lock(pdir, wait=0.0):
    """Hold the profile's start lock: two ``start``s at once would share one profile."""
    deadline = time.monotonic() + wait
    with open(os.path.join(pdir, ".start.lock"), "w") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.1)
                    continue
                raise LaunchError(
                    f"another hpclaunch start is starting the cluster of "
                    f"{describe_profile(pdir)[0]} right now; wait for it, then use hpclaunch "
                    "status") from None
        yield


def is_controller(pid):
    """Whether ``pid`` is a live hpclaunch controller (of anyone's launching)."""
    if not isinstance(pid, int):
        return False
    import psutil

    try:
        proc = psutil.Process(pid)
        argv = proc.cmdline()
        words = " ".join(argv)
        return (proc.status() != psutil.STATUS_ZOMBIE
                and ("hpclaunch.controller" in words or ("hpclaunch" in words
                                                          and "controller" in argv)))
    except psutil.Error:
        return False
