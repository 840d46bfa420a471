"""Compose a controller and N engines of one profile on a batch system.

The launcher knows how to start and stop processes, never what they say on the
wire: it learns the controller is up from its connection files, and leaves
"are the engines registered?" to callers that hold a client. Every change is
written to the profile's state file at once, so another shell can take over.
"""

import glob
import logging
import os
import sys
import time

import hpclaunch
from ..error import ConnectionFileError
from ..protocol import paths, read_connection_file
from .base import get_system, runs_processes
from .controllerjob import ControllerJob, adopt_hosting_jobs, controller_in_live_job
from .errors import (
    ClusterAlreadyRunning,
    ClusterNotRunning,
    ControllerStartError,
    LaunchError,
)
from .fanout import FanoutEngines
from .guards import is_controller, start_lock
from .hugepages import with_huge_pages
from .jobengines import JobEngines
from .profile import load_profile
from .processes import tail, wait_for_exit
from .state import ClusterState

log = logging.getLogger("hpclaunch.launch")

POLL_INTERVAL = 0.05
#: Seconds engines get to leave on their own once the controller is gone.
ENGINE_GRACE = 0.5


def added_engine_argv(argv):
    """The command line of engines added to a running cluster. Without --ids-follow-ranks:
    they form a new MPI world whose ranks start at 0 again, ids the cluster already used,
    so they take the next free ids (each engine's rank is still in its engine info)."""
    return [word for word in argv if word != "--ids-follow-ranks"]


def child_env(extra=None):
    """The environment of launched processes: ours, unbuffered, importing this hpclaunch,
    with malloc on huge pages (hugepages.py)."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    source_root = os.path.dirname(os.path.dirname(os.path.abspath(hpclaunch.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source_root, env.get("PYTHONPATH")) if p)
    env.update(extra or {})
    return with_huge_pages(env)


def level_name(level):
    """``40`` or ``"error"`` -> ``"ERROR"``: ipyparallel code passes logging's integers,
    the controller and engine command lines take names."""
    if level is None or isinstance(level, str):
        return level.upper() if level else level
    name = logging.getLevelName(level)
    if not isinstance(name, str) or name.startswith("Level "):
        raise ValueError(f"log level {level!r} is not one of logging's levels "
                         "(10 DEBUG, 20 INFO, 30 WARNING, 40 ERROR, 50 CRITICAL)")
    return name


class ClusterLauncher:
    """Starts, tracks and stops the processes of the cluster in ``profile_dir``."""

    def __init__(self, profile_dir, system=None, python=None, log_level=None, ip=None,
                 port=None, hb_period=None, hb_liveness=None, engine_timeout=None,
                 controller_args=(), engine_args=(), env=None, profile=None, allocation=None,
                 controller_in_job=False):
        self.profile_dir = os.path.abspath(profile_dir)
        #: Launch settings (profile.toml): engines go to ``profile.system``'s batch jobs
        #: unless it is 'local' or 'ssh'; the controller runs here (the login node) unless
        #: ``controller_in_job``, where one job runs the controller and the engines.
        self.profile = profile if profile is not None else load_profile(self.profile_dir)
        #: The batch job we run inside (batch-script mode): engines fan out across it.
        self.allocation = allocation
        self.controller_in_job = allocation is None and (
            controller_in_job or self.profile.controller_in_job)
        self.jobs = JobEngines(self)
        self.fanouts = FanoutEngines(self)
        self.controller_job = ControllerJob(self)
        #: The controller's system, and the engines' unless they go to a scheduler's jobs
        #: (inside a job, the controller and the srun/mpiexec fan-out are processes here).
        self.system = system or get_system(
            self.profile.system if runs_processes(self.profile.system) and allocation is None
            else "local", self.profile, self.profile_dir)
        self.python = python or sys.executable
        self.log_level = level_name(log_level)
        self.ip, self.port = ip, port
        self.hb_period, self.hb_liveness = hb_period, hb_liveness
        self.engine_timeout = engine_timeout
        self.controller_args = list(controller_args)
        self.engine_args = list(engine_args)
        self.extra_env = dict(env or {})
        self.env = child_env(env)
        self.state = None

    # -- reattaching ---------------------------------------------------------
    @classmethod
    def attach(cls, profile_dir):
        """A launcher for the cluster already running in ``profile_dir``.

        Stale state (the controller is gone) is cleaned up, then reported as
        ClusterNotRunning, so a crashed cluster never blocks the profile."""
        state = ClusterState.load(profile_dir)
        if state is None:
            raise ClusterNotRunning(profile_dir)
        profile = _profile_or_default(profile_dir)
        launcher = cls(profile_dir, system=get_system(state.batch_system, profile, profile_dir),
                       profile=profile, env=state.extra_env)
        launcher.state = state
        if not launcher.controller_running():
            launcher.clean_stale()
            raise ClusterNotRunning(
                profile_dir, f" (cleaned up stale state of controller pid {state.controller.pid})"
                if state.controller else " (cleaned up stale state)")
        return launcher

    def running_controller_pid(self):
        """Pid of a live controller of this profile (per state or connection file), or None."""
        state = ClusterState.load(self.profile_dir)
        if state is not None and state.controller_alive():
            return state.controller.pid
        in_job = controller_in_live_job(state) if state is not None else None
        if in_job is not None:
            return in_job
        try:
            info = read_connection_file(paths.client_file(self.profile_dir),
                                        check_permissions=False)
        except ConnectionFileError:
            return None
        return info.get("controller_pid") if is_controller(info.get("controller_pid")) else None

    def clean_stale(self):
        """Remove what a dead cluster left: processes still alive, state, connection files."""
        state = self.state or ClusterState.load(self.profile_dir)
        if state is not None:
            if state.jobs:  # a crashed start's jobs would otherwise wait in the queue
                current, self.state = self.state, state
                try:
                    self.jobs.cancel()
                finally:
                    self.state = current
            leftovers = self.system.stop(state.all_records(), grace=3.0)
            if leftovers:
                log.warning("could not end stale processes %s", [p.pid for p in leftovers])
            state.remove()
        self._remove_connection_files()

    # -- starting ------------------------------------------------------------
    def start_controller(self, timeout=30.0, engines=None, progress=None):
        """Start the controller and wait for its connection files; return client info.

        With ``controller_in_job``: submit the job of the controller and ``engines``
        engines, reporting its states to ``progress`` (see ControllerJob.wait)."""
        os.makedirs(paths.logs_dir(self.profile_dir), exist_ok=True)
        # Inside the controller's job, the login side may hold the lock for a moment more.
        with start_lock(self.profile_dir, wait=10.0 if self.allocation else 0.0):
            hosting = adopt_hosting_jobs(self.profile_dir, self.allocation)
            pid = self.running_controller_pid()
            if pid is not None:
                raise ClusterAlreadyRunning(self.profile_dir, pid)
            self.clean_stale()
            if not self.controller_in_job:
                return self._start_controller(timeout, hosting)
            self.controller_job.submit(engines, timeout)
        return self.controller_job.wait(timeout, progress)

    def _start_controller(self, timeout, hosting_jobs=()):
        argv = [self.python, "-m", "hpclaunch.controller", "--profile-dir", self.profile_dir]
        for flag, value in (("--ip", self.ip), ("--port", self.port),
                            ("--hb-period", self.hb_period), ("--hb-liveness", self.hb_liveness),
                            ("--log-level", self.log_level)):
            if value is not None:
                argv += [flag, str(value)]
        argv += self.controller_args
        log_path = os.path.join(paths.logs_dir(self.profile_dir), "controller.log")
        record = self.system.start(argv, log_path, "controller", env=self.env)
        self.state = ClusterState(self.profile_dir, batch_system=self.system.name,
                                  controller=record, jobs=hosting_jobs, extra_env=self.extra_env)
        self.state.recount()  # a hosting job's engines are expected from now on
        self.state.save()
        info = self._wait_for_connection_files(record, timeout)
        self.state.url = info["url"]
        self.state.save()
        log.info("controller pid %d listening at %s", record.pid, info["url"])
        return info

    def _wait_for_connection_files(self, record, timeout):
        deadline = time.monotonic() + timeout
        while True:
            if not self.system.is_running(record):
                code = self.system.exit_code(record)
                self.stop()
                raise ControllerStartError(
                    f"the controller exited (status {code}) before writing its connection "
                    f"files; last lines of {record.log}:\n{tail(record.log)}")
            info = self._read_connection_files(record.pid)
            if info is not None:
                return info
            if time.monotonic() > deadline:
                self.stop()
                raise ControllerStartError(
                    f"the controller (pid {record.pid}) wrote no connection files in "
                    f"{timeout:g} s; raise the timeout on a slow machine. Last lines of "
                    f"{record.log}:\n{tail(record.log)}")
            time.sleep(POLL_INTERVAL)

    def _read_connection_files(self, pid):
        try:
            client = read_connection_file(paths.client_file(self.profile_dir))
            engine = read_connection_file(paths.engine_file(self.profile_dir))
        except ConnectionFileError:
            return None
        if client.get("controller_pid") != pid or engine.get("controller_pid") != pid:
            return None  # an older controller's files, not yet replaced
        return client

    def start_engines(self, n):
        """Start ``n`` more engines; return their records (registration is the caller's)."""
        if n < 1:
            raise ValueError(f"the number of engines must be at least 1, not {n}")
        if self.state is None or not self.controller_running():
            raise ClusterNotRunning(self.profile_dir, " (start the controller first)")
        if self.state.engine_argv is None:
            argv = self.engine_argv()
            self.state.update(lambda state: setattr(state, "engine_argv", argv))
        else:
            argv = added_engine_argv(self.engine_argv())
        if self.allocation is not None:
            self.fanouts.start(n, self.allocation.fanout_for(self.profile), argv)
            return []
        if self.submits_jobs:
            self.jobs.submit(n, argv)
            return []
        logs_dir = paths.logs_dir(self.profile_dir)
        first = _next_engine_index(self.state.engines, logs_dir, self.state.started)
        started = []

        def record(engine):
            started.append(engine)
            self.state.update(lambda state: _add_engine(state, engine))

        roles = [f"engine-{k}" for k in range(first, first + n)]
        self.system.start_engines(argv, roles, logs_dir, self.env, record,
                                  list(self.state.engines))
        return started

    @property
    def submits_jobs(self):
        """Whether batch jobs run the engines (any system but 'local' and 'ssh', unless
        we are already inside the job: then they fan out across it)."""
        return not runs_processes(self.profile.system) and self.allocation is None

    def engine_argv(self):
        """The command line of one engine (here, on an ssh host, or inside a batch job): the
        one the cluster's first engines got, when it has some, so added engines match them."""
        if self.state is not None and self.state.engine_argv:
            return list(self.state.engine_argv)
        elsewhere = self.profile.system != "local" and self.profile.python
        python = self.profile.python if elsewhere else self.python
        argv = [python, "-m", "hpclaunch.engine", "--file", paths.engine_file(self.profile_dir)]
        if self.engine_timeout is not None:
            argv += ["--timeout", str(self.engine_timeout)]
        if self.log_level is not None:
            argv += ["--log-level", str(self.log_level)]
        if self.profile.uses_mpi:
            argv.append("--mpi")
        if self.profile.ids_follow_ranks:
            argv.append("--ids-follow-ranks")
        return argv + self.engine_args

    def expected_engines(self):
        """How many engines were launched (as processes, inside jobs, or are coming
        with the controller's job)."""
        return self.state.n if self.state else 0

    # -- watching ------------------------------------------------------------
    def engine_records(self):
        return list(self.state.engines) if self.state else []

    def dead_engines(self, records=None):
        """Engines (of ``records``, default all) whose process has ended."""
        records = records if records is not None else self.engine_records()
        running = self.system.running(records)
        return [r for r in records if r not in running]

    def controller_running(self):
        """Whether the controller runs: its pid here, or (in a job on another node, or
        not up yet in its job) whether the job that hosts it is still queued or running."""
        state = self.state
        if state is None:
            return False
        if state.controller is not None and state.runs_here():
            return self.system.is_running(state.controller)
        return self.controller_job.alive()

    # -- stopping ------------------------------------------------------------
    def stop_engines(self, grace=5.0):
        """End every engine (SIGTERM: they unregister), keep the controller running."""
        if self.state is None:
            return
        self.state.refresh()
        state = self.state
        fanouts = [f.process for f in state.fanouts] if state.runs_here() else []
        leftovers = self.system.stop(state.engines + fanouts, grace=grace)
        hosting = [j.job_id for j in state.jobs if j.hosts_controller]  # runs the controller
        unfinished = self.jobs.cancel(keep=hosting) if state.jobs else []

        def forget_all(latest):
            latest.engines = []
            latest.jobs = [j for j in latest.jobs if j.job_id in hosting] + unfinished
            if fanouts:
                latest.fanouts = []
            latest.recount()
        self.state.update(forget_all)
        if unfinished:
            raise LaunchError(f"batch jobs {' '.join(j.job_id for j in unfinished)} were "
                              "cancelled but are still in the queue; check them with the "
                              "scheduler")
        if leftovers:
            raise LaunchError(f"engine processes {sorted(p.pid for p in leftovers)} "
                              "survived SIGKILL; end them by hand")

    def forget_engines(self, records, grace=5.0):
        """Drop stopped engines from the state, ending any of them still running.

        Returns the processes that survived SIGKILL (empty on success)."""
        leftovers = self.system.stop(records, grace=grace)
        gone = {(r.pid, r.create_time) for r in records}

        def forget(state):
            state.engines = [e for e in state.engines if (e.pid, e.create_time) not in gone]
            state.recount()
        self.state.update(forget)
        return leftovers

    def stop(self, graceful_wait=0.0, grace=5.0):
        """End every process of the cluster; remove the state and connection files.

        ``graceful_wait``: seconds to let processes leave on their own first (after
        the caller asked the controller to shut down). Raises LaunchError naming any
        pid that could not be ended."""
        state = self.state  # re-read only while it names this controller (not a newer one)
        if state is None:
            return
        state.refresh()
        records = state.all_records()
        if graceful_wait > 0 and state.controller is not None:
            # The controller leaves last (after telling engines); engines still up a
            # moment later missed the word and get SIGTERM, which they handle cleanly.
            wait_for_exit([state.controller], graceful_wait)
            wait_for_exit([r for r in records if r is not state.controller], ENGINE_GRACE)
            self.controller_job.wait_for_end(graceful_wait)
        own = [self.allocation.job_id] if self.allocation else []
        unfinished = self.jobs.cancel(keep=own) if state.jobs else []
        leftovers = self.system.stop(records, grace=grace)
        still = [r.pid for r in records if r.is_alive()]
        state.remove()
        self._remove_connection_files(state.controller.pid if state.controller else None)
        self.state = None
        if leftovers or still:
            pids = sorted({p.pid for p in leftovers} | set(still))
            raise LaunchError(f"processes {pids} survived SIGKILL; end them by hand")
        if unfinished:
            ids = " ".join(j.job_id for j in unfinished)
            raise LaunchError(f"batch jobs {ids} were cancelled but are still in the queue "
                              f"({', '.join(j.state for j in unfinished)}); check them with "
                              f"the scheduler (e.g. squeue -j {ids.replace(' ', ',')})")

    def _remove_connection_files(self, controller_pid=None):
        """Remove connection files unless a different, live controller wrote them."""
        for path in (paths.client_file(self.profile_dir), paths.engine_file(self.profile_dir)):
            try:
                info = read_connection_file(path, check_permissions=False)
                owner = info.get("controller_pid")
                if owner != controller_pid and is_controller(owner):
                    continue
            except ConnectionFileError:
                pass
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


def _profile_or_default(pdir):
    """The profile of a running cluster; a profile.toml broken since start must not block stop."""
    from .profile import Profile, ProfileError

    try:
        return load_profile(pdir)
    except ProfileError as e:
        log.warning("%s; stopping with default settings", e)
        return Profile()


def _add_engine(state, record):
    state.engines.append(record)
    state.recount()


def _next_engine_index(records, logs_dir, since):
    """Log index for the next engine: one past the highest so far (logs never clash),
    counting the logs this cluster wrote since ``since`` for engines stopped already."""
    indices = [int(r.role.split("-", 1)[1]) for r in records
               if r.role.startswith("engine-") and r.role.split("-", 1)[1].isdigit()]
    for path in glob.glob(os.path.join(logs_dir, "engine-*.log")):
        number = os.path.basename(path)[len("engine-"):-len(".log")]
        try:
            if number.isdigit() and os.path.getmtime(path) >= since:
                indices.append(int(number))
        except OSError:
            continue
    return max(indices, default=-1) + 1
