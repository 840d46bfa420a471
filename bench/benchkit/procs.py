"""Process bookkeeping: CPU and memory of the client and of the processes it started, and
clean-up of exactly those processes (by PID, never by name), so one peer's leftovers can
neither disturb the next peer's figures nor outlive the run."""

import os
import re
import time

import psutil

_ME = psutil.Process(os.getpid())
# Every descendant ever seen, keyed by pid. psutil.Process remembers the creation time,
# so a recycled PID is never mistaken for one of ours.
_SEEN = {}


def descendants():
    try:
        kids = _ME.children(recursive=True)
    except psutil.Error:
        return []
    for p in kids:
        _SEEN.setdefault(p.pid, p)
    return kids


def cpu_snapshot():
    """(client CPU seconds, sum of CPU seconds of live descendants)."""
    t = _ME.cpu_times()
    client = t.user + t.system
    kids = 0.0
    for p in descendants():
        try:
            c = p.cpu_times()
            kids += c.user + c.system
        except psutil.Error:
            pass
    return client, kids


def label(p):
    """Short role name of a process from its command line (e.g. ``ipyparallel.engine``)."""
    try:
        cmd = p.cmdline()
    except psutil.Error:
        return "?"
    if cmd and " " in cmd[0]:  # retitled process, e.g. "dask worker [tcp://...]"
        return cmd[0].split(" [")[0]
    if "-m" in cmd[:-1]:
        return cmd[cmd.index("-m") + 1]
    if "-c" in cmd[:-1]:
        code = cmd[cmd.index("-c") + 1]
        return "multiprocessing" if "multiprocessing" in code else "python -c"
    for arg in cmd[1:]:
        if arg and not arg.startswith("-"):
            return os.path.basename(arg)
    return p.name() or "?"


def cpu_by_process():
    """{pid: (label, cpu seconds)} for this process and its live descendants."""
    out = {}
    for p in [_ME] + descendants():
        try:
            t = p.cpu_times()
            out[p.pid] = ("client" if p.pid == _ME.pid else label(p), t.user + t.system)
        except psutil.Error:
            pass
    return out


def cpu_breakdown(before, after):
    """CPU deltas aggregated by role label: {label: [cpu_s, n_procs]}, biggest first."""
    agg = {}
    for pid, (role, cpu) in after.items():
        delta = cpu - before.get(pid, (role, 0.0))[1]
        entry = agg.setdefault(role, [0.0, 0])
        entry[0] = round(entry[0] + delta, 2)
        entry[1] += 1
    return dict(sorted(agg.items(), key=lambda kv: -kv[1][0]))


def descendants_matching(pattern):
    """Live descendants whose full command line matches the regex `pattern`."""
    rx = re.compile(pattern)
    found = []
    for p in descendants():
        try:
            if rx.search(" ".join(p.cmdline())):
                found.append(p)
        except psutil.Error:
            pass
    return found


def rss_mb(pids):
    """Resident set size in MB (1e6 bytes) of each pid that is still alive."""
    out = []
    for pid in pids:
        try:
            out.append(psutil.Process(pid).memory_info().rss / 1e6)
        except psutil.Error:
            pass
    return out


def n_descendants():
    return len(descendants())


def kill_leftovers(grace=5.0, settle=5.0):
    """Terminate (then kill) descendants still alive `settle` seconds after the peer's own
    shutdown returned. Returns ``pid:role`` of each process that had to be signalled."""
    descendants()
    pending = [p for p in _SEEN.values() if _alive(p)]
    if pending:  # the peer's own shutdown may still be finishing
        psutil.wait_procs(pending, timeout=settle)
    alive = [p for p in _SEEN.values() if _alive(p)]
    labels = [f"{p.pid}:{label(p)}" for p in alive]
    for p in alive:
        _signal(p, p.terminate)
    _, still = psutil.wait_procs(alive, timeout=grace)
    for p in still:
        _signal(p, p.kill)
    if still:
        psutil.wait_procs(still, timeout=grace)
    return labels


def _alive(p):
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _signal(p, action):
    try:
        action()
    except psutil.Error:
        pass


def loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def now():
    return time.perf_counter()
