"""Engines started as batch jobs: render, submit, poll (batched, with backoff) and cancel.

The controller stays a local process on this (login) node; only the engines go
through the scheduler. Every submitted job is written to the cluster state file
at once, so ``hpclaunch stop`` from another shell can still cancel it.
"""

import glob
import logging
import os
import re
import time

from .jobs import JobRecord
from .processes import tail
from .render import plan_jobs
from .scheduler import SchedulerError, scheduler

log = logging.getLogger("hpclaunch.launch")

#: Seconds ``cancel`` waits for cancelled jobs to leave the queue.
CANCEL_WAIT = 30.0
#: Poll intervals grow from the first to the last value (seconds) while nothing changes.
POLL_BACKOFF = (0.5, 1.0, 2.0, 5.0)


class JobEngines:
    """The batch jobs of one cluster, on the launcher's state."""

    def __init__(self, launcher):
        self.launcher = launcher
        self._next_poll = 0.0
        self._backoff = 0
        self._last = None

    @property
    def records(self):
        state = self.launcher.state
        return list(state.jobs) if state is not None else []

    def plan(self, n, first_index=1, engine_argv=None):
        """The JobScripts that ``submit(n)`` would submit (what ``hpclaunch render`` prints)."""
        return plan_jobs(self.launcher.profile, n, self.launcher.profile_dir,
                         engine_argv or self.launcher.engine_argv(), first_index)

    def submit(self, n, engine_argv=None):
        """Render and submit jobs for ``n`` engines; return their JobRecords."""
        profile = self.launcher.profile
        sched = scheduler(profile.system)
        state = self.launcher.state
        submitted = []
        for job in self.plan(n, _next_job_index(state.jobs), engine_argv):
            os.makedirs(os.path.dirname(job.path), exist_ok=True)
            os.makedirs(os.path.dirname(job.output), exist_ok=True)
            with open(job.path, "w") as f:
                f.write(job.text)
            os.chmod(job.path, 0o755)
            job_id = sched.submit(job.path, env=self.launcher.env)
            record = JobRecord(job_id, sched.name, job.path, job.output, job.engines,
                               job.array_size)
            state.update(lambda latest: _add_job(latest, record))
            submitted.append(record)
            log.info("submitted %s job %s for %d engines", sched.name, job_id, job.engines)
        return submitted

    def poll(self, force=False):
        """{job id: JobState} of every job, asking the scheduler at most once per backoff step."""
        records = self.records
        if not records:
            return {}
        now = time.monotonic()
        if not force and now < self._next_poll:
            return {r.job_id: r.job_state for r in records}
        states = poll_records(records)

        def record_states(latest):
            for record in latest.jobs:
                if record.job_id in states:
                    record.state = states[record.job_id].value
        if self.launcher.state.controller is None:
            # controller-in-job, not up yet: the job's own start writes the file now
            record_states(self.launcher.state)
        else:
            self.launcher.state.update(record_states)
        records = self.records
        snapshot = {r.job_id: r.state for r in records}
        self._backoff = 0 if snapshot != self._last else min(self._backoff + 1,
                                                              len(POLL_BACKOFF) - 1)
        self._last = snapshot
        self._next_poll = now + POLL_BACKOFF[self._backoff]
        return {r.job_id: r.job_state for r in records}

    def engines_possible(self, job_ids=None):
        """How many engines the jobs (of ``job_ids``, default all) not yet finished may
        still bring up."""
        return sum(r.engines for r in self.records if not r.job_state.finished
                   and (job_ids is None or r.job_id in job_ids))

    def cancel(self, wait=CANCEL_WAIT, job_ids=None, keep=()):
        """Cancel every unfinished job (of ``job_ids``, default all) but those in ``keep``
        (the job we run in); wait until the scheduler shows them all ended.

        Returns the jobs still not finished after ``wait`` seconds (empty on success)."""
        live = [r for r in self.records if not r.job_state.finished and r.job_id not in keep
                and (job_ids is None or r.job_id in job_ids)]
        for system in sorted({r.system for r in live}):
            ids = [r.job_id for r in live if r.system == system]
            try:
                scheduler(system).cancel(ids)
            except SchedulerError as e:  # still stop the rest; the caller reports these jobs
                log.error("cannot cancel %s jobs %s: %s", system, " ".join(ids), e)
        deadline = time.monotonic() + wait
        while live:
            states = self.poll(force=True)
            # a job gone from the state was forgotten by another shell once it ended
            live = [r for r in live if r.job_id in states and not states[r.job_id].finished]
            if not live or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        return live

    def release(self, stopped):
        """Count engines stopped in each job (``{job id: count}``) against it; return the
        ids of jobs left with no engine (they must leave the queue)."""
        def take(state):
            for record in state.jobs:
                if record.job_id in stopped:
                    record.engines = max(record.engines - stopped[record.job_id], 0)
            state.recount()
        if stopped:
            self.launcher.state.update(take)
        return [r.job_id for r in self.records if r.job_id in stopped and r.engines == 0]

    def forget(self, job_ids):
        """Drop finished jobs from the state (their engines were stopped)."""
        def drop(state):
            state.jobs = [j for j in state.jobs if j.job_id not in job_ids]
            state.recount()
        self.launcher.state.update(drop)

    def describe_failure(self, max_lines=25, job_ids=None):
        """Text quoting the output (stdout+stderr) of the jobs (of ``job_ids``, default
        all), for a start that failed."""
        parts = []
        for record in self.records:
            if job_ids is not None and record.job_id not in job_ids:
                continue
            files = output_files(record)
            head = f"--- {record.system} job {record.job_id} ({record.state}, " \
                   f"{record.engines} engine{'s' if record.engines != 1 else ''})"
            if not files:
                parts.append(f"{head}: no output file matching {record.output} yet")
                continue
            for path in files[:2]:
                parts.append(f"{head}; last lines of {path}:\n{tail(path, lines=max_lines)}")
        return "\n".join(parts)


def poll_records(records):
    """{job id: JobState} for the jobs the scheduler answered about (one call per system)."""
    states = {}
    for system in sorted({r.system for r in records}):
        ids = [r.job_id for r in records if r.system == system]
        try:
            states.update(scheduler(system).poll(ids))
        except SchedulerError as e:
            log.warning("cannot poll %s jobs %s: %s", system, ids, e)
    return states


def any_unfinished(records):
    """Whether any of these jobs is still queued or running (asks the scheduler)."""
    return any(not s.finished for s in poll_records(records).values())


def _next_job_index(records):
    """Index for the next job script: past every recorded job's (a later submit, e.g.
    ``hpclaunch engines add``, must not overwrite the script of a job in the queue)."""
    indices = [int(m.group(1)) for m in (re.search(r"engines-(\d+)\.\w+$", r.script or "")
                                         for r in records) if m]
    return max(indices, default=0) + 1


def _add_job(state, record):
    state.jobs.append(record)
    state.recount()


def output_files(record):
    """The job's output files (its ``%j``/``%A_%a`` pattern filled with its id)."""
    pattern = record.output
    for token in ("%j", "%A", "%J"):
        pattern = pattern.replace(token, record.job_id)
    for token in ("%a", "%I", "$JOB_ID", "$TASK_ID", "^array_index^"):
        pattern = pattern.replace(token, "*")
    return sorted(glob.glob(pattern))
