"""The ``local`` batch system: processes on this machine, one session each.

Each process gets its own session (``start_new_session``), so a Ctrl-C in the
launching terminal reaches only the launcher, which then stops the cluster in
order (controller first, so engines are told to leave) instead of every process
dying at once with half-written state.
"""

import os
import subprocess

from .base import BatchSystem, register
from .processes import ProcessRecord, terminate


@register
class LocalSystem(BatchSystem):
    name = "local"

    def __init__(self):
        # Popen objects of processes this Python started: polling them reaps zombies.
        self._children = {}

    def start(self, argv, log_path, role, env=None):
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                env=env, start_new_session=True, close_fds=True)
        self._children[proc.pid] = proc
        return ProcessRecord.of_started(proc.pid, argv, log_path, role)

    def is_running(self, record):
        child = self._children.get(record.pid)
        if child is not None:
            return child.poll() is None  # our own child: no need to ask the OS by pid
        return record.is_alive()

    def exit_code(self, record):
        child = self._children.get(record.pid)
        return None if child is None else child.poll()

    def stop(self, records, grace=5.0):
        survivors = terminate(records, grace=grace)
        for record in records:
            child = self._children.pop(record.pid, None)
            if child is not None:
                child.poll()
        return survivors
