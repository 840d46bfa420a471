"""Growing and shrinking a running cluster (``hpclaunch engines add|stop``, ``hl.Cluster``).

Adding goes through the same launcher path as ``start`` (processes here, or batch
jobs shaped like the profile) and waits only for the new engines; if they do not
all come up, what the add started is undone, so the cluster is as it was.
Stopping asks the controller to shut those engines down (they finish the task at
hand, unregister and exit), then tidies what launched them: a local engine's
process record goes, and a batch job left without engines must leave the queue.
Every change goes to the state file at once, so ``status``/``stop`` in another
shell see it.
"""

import collections
import dataclasses
import socket
import time

from .launch import ClusterNotRunning, LaunchError
from .launch.processes import wait_for_exit

#: Seconds stopped engines get to unregister before local ones are signalled.
STOP_TIMEOUT = 30.0
#: Seconds an engine process gets to exit after it unregistered.
EXIT_GRACE = 5.0
#: Seconds a job whose engines all stopped gets to end by itself before it is cancelled.
JOB_END_WAIT = 20.0
#: Seconds a failed add waits for the engines it started and stopped to leave the client.
UNDO_WAIT = 2.0


@dataclasses.dataclass(frozen=True)
class Launched:
    """What one start or add launched, so waiting counts only its engines."""

    before: frozenset = frozenset()    # engine ids registered before
    pids: frozenset = frozenset()      # engine processes started here
    job_ids: frozenset = frozenset()   # batch jobs submitted

    def owns(self, eid, info, jobs):
        """Whether registered engine ``eid`` (``info`` from the client) came from this launch."""
        if eid in self.before:
            return False
        if self.pids:
            return info.get("pid") in self.pids and info.get("hostname") == socket.gethostname()
        job = job_of(info, jobs)
        return job is None or job in self.job_ids


@dataclasses.dataclass
class StoppedEngines:
    """What ``stop_engines`` did, for the CLI to print and notebooks to inspect."""

    engines: list          # [{"id", "pid", "host", "job", "system"}] per stopped engine
    ended_jobs: list       # batch jobs that left the queue because all their engines stopped
    cancelled_jobs: list   # of those, the ones that had to be cancelled
    signalled: list        # engine ids that ignored the request and got SIGTERM
    remaining: int         # engines still registered afterwards


def registered_engines(rc):
    """{engine id: {"hostname", "pid", "uuid", ...}} as the client knows them."""
    engines = rc.engines
    return {eid: dict(engines.get(eid, {})) for eid in rc.ids}


def job_of(info, jobs):
    """The batch job (id, of ``jobs``) an engine runs in, from the id it sent when it
    registered; an engine that sent none runs in the only job, if there is one."""
    reported = info.get("batch_job")
    if reported is None:
        return jobs[0].job_id if len(jobs) == 1 else None
    for job in jobs:
        if _job_number(job.job_id) == _job_number(str(reported)):
            return job.job_id
    return None


def _job_number(job_id):
    """'123', '123.server', '123[].server', '123[4].server' -> '123' (what every
    scheduler's job variable and submit output share)."""
    digits = ""
    for char in job_id:
        if not char.isdigit():
            break
        digits += char
    return digits or job_id


# -- adding ---------------------------------------------------------------------------
def add_engines(cluster, rc, n, timeout=None, on_progress=None, on_jobs=None,
                on_submitted=None):
    """Start ``n`` more engines on ``cluster`` and wait until they registered with ``rc``.

    Returns the new engine ids. On failure (a job died, a process exited, timeout,
    Ctrl-C) whatever this call started is stopped again and removed from the state,
    then the error is raised."""
    launcher = cluster._launcher
    if n is None or n < 1:
        raise ValueError(f"add at least 1 engine, not {n}")
    if not launcher.controller_running():
        raise ClusterNotRunning(launcher.profile_dir)
    state = launcher.state
    state.refresh()
    before_ids = frozenset(rc.ids)
    old_records = {(r.pid, r.create_time) for r in state.engines}
    old_records |= {(f.process.pid, f.process.create_time) for f in state.fanouts}
    old_jobs = {j.job_id for j in state.jobs}
    try:
        launcher.start_engines(n)
        launched = Launched(
            before_ids,
            frozenset(r.pid for r in _new_records(launcher, old_records)),
            frozenset(j.job_id for j in launcher.state.jobs if j.job_id not in old_jobs))
        if on_submitted is not None:
            on_submitted([j for j in launcher.state.jobs if j.job_id in launched.job_ids])
        return cluster.wait_for_engines(rc, n, timeout=timeout, on_progress=on_progress,
                                        on_jobs=on_jobs, launched=launched)
    except BaseException as e:
        undone = _undo_add(launcher, old_records, old_jobs)
        ghosts = _wait_until_gone(rc, before_ids)
        if ghosts:
            undone = "; ".join(filter(None, [undone, (
                f"engine(s) {', '.join(map(str, ghosts))} registered before they were stopped; "
                "the controller drops them once their heartbeat stops")]))
        if undone and isinstance(e, LaunchError):
            e.args = (f"{e}\nundoing the add: {undone}",)
        raise


def _wait_until_gone(rc, before_ids, timeout=UNDO_WAIT):
    """Engines of an undone add that registered unregister as they are stopped: wait for
    the client to hear it, so the cluster is as it was. Returns those still listed."""
    deadline = time.monotonic() + timeout
    while set(rc.ids) - before_ids and time.monotonic() < deadline:
        time.sleep(0.01)
    return sorted(set(rc.ids) - before_ids)


def _new_records(launcher, old_records):
    return [r for r in launcher.state.engines if (r.pid, r.create_time) not in old_records]


def _undo_add(launcher, old_records, old_jobs):
    """Stop what a failed add started (engine processes, fan-outs, jobs); a note when
    something could not be undone. ``old_records``: (pid, create time) of the processes
    and fan-outs there were before."""
    notes = []
    leftovers = launcher.forget_engines(_new_records(launcher, old_records))
    new_fanouts = [f for f in launcher.state.fanouts
                   if (f.process.pid, f.process.create_time) not in old_records]
    if new_fanouts:  # inside a batch job: the srun/mpiexec this add started
        leftovers += launcher.fanouts.forget(new_fanouts)
    if leftovers:
        notes.append(f"engine processes {sorted(p.pid for p in leftovers)} survived SIGKILL")
    new_jobs = {j.job_id for j in launcher.state.jobs if j.job_id not in old_jobs}
    if new_jobs:
        unfinished = launcher.jobs.cancel(job_ids=new_jobs)
        launcher.jobs.forget(new_jobs - {j.job_id for j in unfinished})
        if unfinished:
            notes.append(f"jobs {' '.join(j.job_id for j in unfinished)} were cancelled but "
                         "are still in the queue (hpclaunch stop cancels them again)")
    return "; ".join(notes)


# -- stopping -------------------------------------------------------------------------
def stop_engines(launcher, rc, engine_ids, timeout=STOP_TIMEOUT):
    """Shut down the engines ``engine_ids`` through the controller; return StoppedEngines.

    The controller keeps running even when every engine is stopped."""
    if not launcher.controller_running():
        raise ClusterNotRunning(launcher.profile_dir)
    wanted = check_engine_ids(engine_ids, rc.ids, launcher.profile_dir)
    launcher.state.refresh()
    engines = registered_engines(rc)
    jobs = list(launcher.state.jobs)
    systems = {j.job_id: j.system for j in jobs}
    here = socket.gethostname()
    records = {}
    for eid in wanted:
        info = engines[eid]
        for record in launcher.state.engines:
            if record.pid == info.get("pid") and info.get("hostname") == here:
                records[eid] = record
    in_job = {eid: job_of(engines[eid], jobs) for eid in wanted}
    rc.shutdown(targets=wanted, block=False)
    stuck = _wait_unregistered(rc, wanted, timeout)
    signalled = [eid for eid in stuck if eid in records]
    if signalled:  # busy with a long task: SIGTERM interrupts it, the engine still says goodbye
        launcher.system.stop([records[eid] for eid in signalled], grace=EXIT_GRACE)
        stuck = _wait_unregistered(rc, stuck, EXIT_GRACE)
    wait_for_exit(list(records.values()), EXIT_GRACE)
    leftovers = launcher.forget_engines(list(records.values()))
    ended, cancelled, queued = _retire_emptied_jobs(
        launcher, collections.Counter(j for j in in_job.values() if j is not None))
    stuck = _wait_unregistered(rc, stuck, 0 if not cancelled else EXIT_GRACE)
    report = StoppedEngines(
        engines=[{"id": eid, "pid": engines[eid].get("pid"), "job": in_job[eid],
                  "system": systems.get(in_job[eid]), "host": engines[eid].get("hostname", "?")}
                 for eid in wanted],
        ended_jobs=ended, cancelled_jobs=cancelled, signalled=signalled,
        remaining=len(rc.ids))
    problems = []
    if stuck:
        problems.append(f"engines {stuck} were asked to stop but are still registered after "
                        f"{timeout:g} s (busy with a long task?); they leave once it ends")
    if leftovers:
        problems.append(f"engine processes {sorted(p.pid for p in leftovers)} survived "
                        "SIGKILL; end them by hand")
    if queued:
        problems.append(f"jobs {' '.join(queued)} have no engines left but are still in the "
                        "queue after scancel/qdel/bkill; check them with the scheduler")
    if problems:
        raise LaunchError("; ".join(problems))
    return report


def check_engine_ids(engine_ids, known, pdir):
    """The distinct ids asked for, or a LaunchError naming the unknown ones and the known."""
    from .launch import describe_profile

    if isinstance(engine_ids, (int, str)):
        engine_ids = [engine_ids]
    try:
        wanted = sorted({int(e) for e in engine_ids})
    except (TypeError, ValueError):
        raise LaunchError(f"engine ids are whole numbers, not {engine_ids!r}") from None
    if not wanted:
        raise LaunchError("name at least one engine id to stop (see hpclaunch status)")
    unknown = [e for e in wanted if e not in known]
    if unknown:
        label = describe_profile(pdir)[0]
        have = ", ".join(map(str, known)) if known else "none"
        raise LaunchError(f"no engine {', '.join(map(str, unknown))} in the cluster of "
                          f"{label}; its registered engines are: {have}")
    return wanted


def _wait_unregistered(rc, ids, timeout):
    """Wait until none of ``ids`` is registered; return those still registered."""
    deadline = time.monotonic() + timeout
    while True:
        left = sorted(set(ids) & set(rc.ids))
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


def _retire_emptied_jobs(launcher, stopped):
    """Count the stopped engines against their jobs; a job left with none must leave the
    queue: wait for it to end by itself, else cancel it. Returns (ended, cancelled,
    still queued) job ids; ended jobs leave the state."""
    emptied = launcher.jobs.release(stopped)
    if not emptied:
        return [], [], []
    deadline = time.monotonic() + JOB_END_WAIT
    live = set(emptied)
    while live and time.monotonic() < deadline:
        states = launcher.jobs.poll(force=True)
        live = {j for j in live if j in states and not states[j].finished}
        if live:
            time.sleep(0.5)
    queued = {j.job_id for j in launcher.jobs.cancel(job_ids=live)} if live else set()
    ended = [j for j in emptied if j not in queued]
    launcher.jobs.forget(set(ended))
    return ended, sorted(live - queued), sorted(queued)
