"""Process records that survive the launching shell, and safe termination.

A pid alone is not an identity: after a reboot or a long uptime it may belong to
someone else. A record keeps the command line and start time, and every signal is
sent only after psutil confirms the pid still runs exactly that command.
"""

import logging
import os
import signal
import time

import psutil

log = logging.getLogger("hpclaunch.launch")

#: Start times of the same process read twice differ by clock-tick rounding only.
CREATE_TIME_SLACK = 1.0


class ProcessRecord:
    """One launched process: what ran, since when, and where its output goes.

    ``host`` is None for a process on this machine; otherwise the ``hosts`` entry of the
    ssh system it runs on, and only that system can poll or signal it."""

    __slots__ = ("pid", "cmdline", "create_time", "log", "role", "host")

    def __init__(self, pid, cmdline, create_time, log, role, host=None):
        self.pid = int(pid)
        self.cmdline = list(cmdline)
        self.create_time = float(create_time)
        self.log = log
        self.role = role
        self.host = host

    @classmethod
    def of_started(cls, pid, cmdline, log_path, role):
        """Record a process we just started (its start time read from the OS)."""
        try:
            created = psutil.Process(pid).create_time()
        except psutil.Error:
            created = time.time()
        return cls(pid, cmdline, created, log_path, role)

    def to_dict(self):
        return {name: getattr(self, name) for name in self.__slots__}

    @classmethod
    def from_dict(cls, data):
        return cls(data["pid"], data["cmdline"], data["create_time"], data.get("log"),
                   data.get("role", "process"), data.get("host"))

    def process(self):
        """The live psutil.Process if this record still names it, else None (always None
        for a process on another host: its pid means nothing here)."""
        if self.host is not None:
            return None
        try:
            proc = psutil.Process(self.pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            if abs(proc.create_time() - self.create_time) > CREATE_TIME_SLACK:
                return None
            if proc.cmdline() != self.cmdline:
                return None
            return proc
        except psutil.Error:
            return None

    def is_alive(self):
        return self.process() is not None

    def __repr__(self):
        where = f" on {self.host}" if self.host else ""
        return f"<{self.role} pid={self.pid}{where}>"


def _descendants(procs):
    found = []
    for proc in procs:
        try:
            found.extend(proc.children(recursive=True))
        except psutil.Error:
            pass
    return found


def _signal_all(procs, sig):
    for proc in procs:
        try:
            proc.send_signal(sig)
        except psutil.Error:
            pass


def _wait(procs, timeout):
    """Wait (reaping our own children) until ``procs`` exit; return the living."""
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    return [p for p in alive if _really_alive(p)]


def _really_alive(proc):
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def wait_for_exit(records, timeout):
    """Give processes ``timeout`` seconds to leave on their own; return the living."""
    procs = [p for p in (r.process() for r in records) if p is not None]
    if not procs:
        return []
    return _wait(procs, timeout)


def terminate(records, grace=5.0, kill_grace=3.0, whole_tree=False):
    """SIGTERM every recorded process (and what it spawned), SIGKILL stragglers.

    ``whole_tree``: SIGTERM what they spawned too, at once (mpiexec and its ranks,
    whose shell would otherwise die first and leave them to SIGKILL).
    Returns the psutil processes still alive afterwards (an empty list on success),
    so callers can report a leftover instead of pretending all went well.
    """
    procs = [p for p in (r.process() for r in records) if p is not None]
    if not procs:
        return []
    children = _descendants(procs)
    if whole_tree:
        procs, children = procs + children, []
    _signal_all(procs, signal.SIGTERM)
    alive = _wait(procs, grace)
    if alive:
        log.warning("sending SIGKILL to %s: they ignored SIGTERM for %.0f s",
                    ", ".join(str(p.pid) for p in alive), grace)
        _signal_all(alive, signal.SIGKILL)
        alive = _wait(alive, kill_grace)
    orphans = [p for p in children if _really_alive(p)]
    if orphans:
        _signal_all(orphans, signal.SIGKILL)
        alive += _wait(orphans, kill_grace)
    return alive


def tail(path, lines=20, max_bytes=64 * 1024):
    """The last ``lines`` lines of a log file, or a note saying why there are none."""
    if not path:
        return "(no log file)"
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read().decode("utf-8", errors="replace")
    except OSError as e:
        return f"(cannot read {path}: {e.strerror})"
    text = "\n".join(data.splitlines()[-lines:])
    return text if text.strip() else f"({path} is empty)"
