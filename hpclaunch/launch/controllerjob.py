"""The controller-in-job shape: one batch job runs the controller and every engine.

For sites where the login node cannot host a long-running controller, ``start
--controller-in-job`` submits ONE job whose script runs batch-script mode
(``hpclaunch start --in-job``): the controller on the job's batch host, engines by
srun/mpiexec across the allocation. The login side only watches: the job's state
from the scheduler, then the state and connection files that the in-job start
writes into the shared profile dir. Until that controller is up the login side
never writes the state file (it would clobber the in-job start's); afterwards
both sides change it only under the state lock (``ClusterState.update``).
"""

import logging
import os
import shlex
import time

from ..protocol import paths
from .errors import ControllerStartError
from .jobengines import any_unfinished
from .jobs import JobRecord, JobState
from .render import plan_jobs
from .scheduler import scheduler
from .state import ClusterState

log = logging.getLogger("hpclaunch.launch")

POLL_INTERVAL = 0.25


class ControllerJob:
    """Submits the controller's job for a launcher and waits for its controller."""

    def __init__(self, launcher):
        self.launcher = launcher

    def in_job_argv(self, n, timeout):
        """The command the job runs: batch-script mode with this launcher's settings."""
        launcher = self.launcher
        python = launcher.profile.python or launcher.python
        argv = [python, "-m", "hpclaunch", "start", "--in-job", "--profile-dir",
                launcher.profile_dir, "-n", str(n), "--timeout", f"{timeout:g}"]
        for flag, value in (("--ip", launcher.ip), ("--port", launcher.port),
                            ("--hb-period", launcher.hb_period),
                            ("--hb-liveness", launcher.hb_liveness),
                            ("--log-level", launcher.log_level)):
            if value is not None:
                argv += [flag, str(value)]
        if launcher.controller_args:
            argv += ["--controller-args", shlex.join(launcher.controller_args)]
        engine_args = launcher.engine_args + (
            ["--timeout", str(launcher.engine_timeout)] if launcher.engine_timeout else [])
        if engine_args:
            argv += ["--engine-args", shlex.join(engine_args)]
        return argv

    def plan(self, n, timeout=60.0):
        """The one JobScript that ``submit`` would submit (what ``render`` prints)."""
        launcher = self.launcher
        return plan_jobs(launcher.profile, n, launcher.profile_dir, launcher.engine_argv(),
                         in_job_command=shlex.join(self.in_job_argv(n, timeout)))[0]

    def submit(self, n, timeout):
        """Render and submit the job; record it in a state file that names no controller yet.

        The in-job start adopts that record (it must not cancel its own job) and replaces
        the file with the full state once its controller is up."""
        launcher = self.launcher
        job = self.plan(n, timeout)
        os.makedirs(os.path.dirname(job.path), exist_ok=True)
        os.makedirs(os.path.dirname(job.output), exist_ok=True)
        with open(job.path, "w") as f:
            f.write(job.text)
        os.chmod(job.path, 0o755)
        sched = scheduler(launcher.profile.system)
        job_id = sched.submit(job.path, env=launcher.env)
        record = JobRecord(job_id, sched.name, job.path, job.output, n, hosts_controller=True)
        launcher.state = ClusterState(launcher.profile_dir, batch_system=launcher.system.name,
                                      jobs=[record], n=n, extra_env=launcher.extra_env)
        launcher.state.save()
        log.info("submitted %s job %s: controller and %d engines", sched.name, job_id, n)
        return record

    def wait(self, timeout, progress=None):
        """Wait until the job's controller is up; return the client connection info.

        ``progress``: an object with ``submitted(jobs)`` and ``__call__({id: JobState})``
        (the CLI's JobProgress). A job that ends first, or a timeout, cancels the job and
        raises ControllerStartError with the scheduler's state and the job's output."""
        record = self.launcher.state.jobs[0]
        if progress is not None:
            progress.submitted([record])
        return self._wait_for_controller(record, timeout, progress)

    def hosting_ids(self):
        """Ids of the jobs that run this cluster's controller, but never the job we run in."""
        launcher = self.launcher
        own = launcher.allocation.job_id if launcher.allocation else None
        state = launcher.state
        return [j.job_id for j in state.jobs if j.hosts_controller and j.job_id != own] \
            if state is not None else []

    def alive(self):
        """Whether a job hosting the controller is still queued or running (polled with
        the launcher's backoff): how the login side tells a controller on another node lives."""
        hosting = self.hosting_ids()
        states = self.launcher.jobs.poll() if hosting else {}
        return any(not states[j].finished for j in hosting if j in states)

    def wait_for_end(self, timeout):
        """Let a job whose controller was asked to shut down end on its own (it then shows
        as done rather than cancelled)."""
        hosting = self.hosting_ids()
        deadline = time.monotonic() + timeout
        while hosting and time.monotonic() < deadline:
            states = self.launcher.jobs.poll(force=True)
            if all(states[j].finished for j in hosting if j in states):
                return
            time.sleep(0.5)

    def _wait_for_controller(self, record, timeout, progress):
        launcher = self.launcher
        deadline = time.monotonic() + timeout
        seen = None
        while True:
            states = launcher.jobs.poll()
            if progress is not None and states != seen:
                seen = dict(states)
                progress(states)
            taken_over = self._taken_over_state(record)
            if taken_over is not None:
                launcher.state = taken_over
                states = launcher.jobs.poll(force=True)
                if progress is not None and states != seen:
                    progress(states)  # "running" before "controller up", however fast it was
                return read_client_info(launcher.profile_dir)
            state = states[record.job_id]
            if state.finished or time.monotonic() > deadline:
                why = (f"ended ({state.value}) before its controller came up" if state.finished
                       else f"is still {state.value} after {timeout:g} s and its controller "
                            "is not up; raise --timeout if the queue is slow")
                detail = launcher.jobs.describe_failure()
                launcher.stop()
                raise ControllerStartError(f"{record.system} job {record.job_id} {why}\n"
                                           f"{detail}")
            time.sleep(POLL_INTERVAL)

    def _taken_over_state(self, record):
        """The state the in-job start wrote once its controller is up, else None."""
        state = ClusterState.load(self.launcher.profile_dir)
        if state is None or state.controller is None or not state.url:
            return None
        if not any(j.job_id == record.job_id for j in state.jobs):
            return None
        info = read_client_info(self.launcher.profile_dir)
        if info is None or info.get("controller_pid") != state.controller.pid:
            return None
        return state


def read_client_info(pdir):
    """The client connection info of ``pdir``, or None while it is not (fully) written."""
    from ..error import ConnectionFileError
    from ..protocol import read_connection_file

    try:
        return read_connection_file(paths.client_file(pdir))
    except ConnectionFileError:
        return None


def controller_in_live_job(state):
    """For a state whose controller runs (or is coming up) in a job that is still queued or
    running, what to call it in 'already running' errors (its pid, or the job); else None."""
    hosting = [j for j in state.jobs if j.hosts_controller]
    if not hosting or (state.controller is not None and state.runs_here()):
        return None  # a controller here is checked by its pid
    if not any_unfinished(hosting):
        return None
    if state.controller is not None:
        return state.controller.pid
    return f"controller coming up in {hosting[0].system} job {hosting[0].job_id}"


def adopt_hosting_jobs(pdir, allocation):
    """Inside the job that ``start --controller-in-job`` submitted: its JobRecord.

    The login side wrote a state naming only that job; the in-job start keeps the
    record (so ``status``/``stop`` on the login node find the job) and removes the
    placeholder instead of treating it as a stale cluster whose jobs need cancelling."""
    if allocation is None:
        return []
    state = ClusterState.load(pdir)
    if state is None or state.controller is not None:
        return []
    jobs = [j for j in state.jobs if j.job_id == allocation.job_id and j.hosts_controller]
    for job in jobs:
        job.state = JobState.RUNNING.value  # we run inside it
    if jobs:
        state.remove()
    return jobs
