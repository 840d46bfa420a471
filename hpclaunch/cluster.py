"""``hl.Cluster``: start a controller and engines from Python, with ipyparallel's names.

It drives the same launcher as ``hpclaunch start``/``stop`` (one way to do each
thing), and adds what needs a client: waiting until engines register, and asking
the controller to shut everything down before any signal is sent.
"""

import asyncio
import atexit
import os
import secrets
import shutil
import time

from .launch import (
    ClusterLauncher,
    ClusterNotRunning,
    ControllerStartError,
    EnginesStartError,
    tail,
)
from .protocol import paths
from .resize import STOP_TIMEOUT, add_engines, job_of, registered_engines, stop_engines

#: Seconds a connect/shutdown attempt may take while stopping (the controller may be dead).
SHUTDOWN_TIMEOUT = 3.0
#: Seconds processes get to leave on their own after a shutdown request.
GRACEFUL_WAIT = 5.0


def _fresh_profile():
    return f"cluster-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


class Cluster:
    """A controller and ``n`` engines on this machine.

    ``profile``/``profile_dir`` choose where connection files, logs and the state
    file live; with neither, a fresh profile is made (so clusters coexist) and
    removed on stop. Other options go to the processes: ``controller_ip``,
    ``controller_port``, ``hb_period``, ``hb_liveness``, ``engine_timeout``
    (seconds an engine waits for the controller), ``controller_args`` and
    ``engine_args`` (extra command-line words), ``env`` (extra environment; kept in the
    profile's cluster.json, mode 0600, so engines added later from another shell get it too).
    ``start_timeout``: seconds for the controller and then all engines to come up.
    ``allocation`` (inside a batch job): engines fan out across it by srun/mpiexec;
    ``controller_in_job``: one batch job runs the controller and the engines.
    """

    def __init__(self, n=None, profile=None, profile_dir=None, log_level=None,
                 controller_ip=None, controller_port=None, hb_period=None,
                 hb_liveness=None, engine_timeout=None, controller_args=(), engine_args=(),
                 env=None, start_timeout=60.0, client_timeout=10.0, shutdown_atexit=True,
                 allocation=None, controller_in_job=False, _launcher=None):
        if n is not None and n < 1:
            raise ValueError(f"a cluster needs at least 1 engine, not n={n}")
        self.n = n or os.cpu_count() or 1
        self._owns_profile_dir = profile is None and profile_dir is None
        self.profile = _fresh_profile() if self._owns_profile_dir else profile
        self.profile_dir = paths.profile_dir(self.profile, profile_dir)
        self.start_timeout = start_timeout
        self.client_timeout = client_timeout
        self.shutdown_atexit = shutdown_atexit
        # from_file passes the attached launcher: building a new one would load profile.toml,
        # and a profile broken since start must not stop us from stopping its cluster
        self._launcher = _launcher or ClusterLauncher(
            self.profile_dir, log_level=log_level, ip=controller_ip, port=controller_port,
            hb_period=hb_period, hb_liveness=hb_liveness, engine_timeout=engine_timeout,
            controller_args=controller_args, engine_args=engine_args, env=env,
            allocation=allocation, controller_in_job=controller_in_job)
        self._clients = []
        self._atexit_registered = False

    @classmethod
    def from_file(cls, profile=None, profile_dir=None, **options):
        """The cluster already running for a profile (started by the CLI or another Python)."""
        pdir = paths.profile_dir(profile, profile_dir)
        launcher = ClusterLauncher.attach(pdir)
        cluster = cls(n=max(launcher.state.n, 1), profile_dir=pdir, shutdown_atexit=False,
                      _launcher=launcher, **options)
        cluster.profile = profile
        return cluster

    def __repr__(self):
        pid = self.controller_pid
        what = f"controller pid {pid}, {len(self.engine_pids)} engines" if pid else "not running"
        return f"<Cluster {self.profile_dir}: {what}>"

    # -- what is running -----------------------------------------------------
    @property
    def controller_pid(self):
        state = self._launcher.state
        return state.controller.pid if state and state.controller else None

    @property
    def url(self):
        return self._launcher.state.url if self._launcher.state else None

    @property
    def engine_pids(self):
        return [r.pid for r in self._launcher.engine_records()]

    @property
    def engines_launched(self):
        """Engines launched and not stopped since (processes here, or inside batch jobs)."""
        return self._launcher.expected_engines()

    @property
    def jobs(self):
        """The batch jobs running this cluster's engines (JobRecords; none when local)."""
        state = self._launcher.state
        return list(state.jobs) if state else []

    @property
    def fanouts(self):
        """The srun/mpiexec processes starting engines across an allocation (FanoutRecords)."""
        state = self._launcher.state
        return list(state.fanouts) if state else []

    @property
    def controller_exit_code(self):
        """The controller's exit status once it ended (None while running, or if unknown)."""
        state = self._launcher.state
        if state is None or state.controller is None:
            return None
        return self._launcher.system.exit_code(state.controller)

    @property
    def running(self):
        return self._launcher.controller_running()

    # -- starting ------------------------------------------------------------
    def start_controller_sync(self, job_progress=None):
        """Start the controller; returns once its connection files are written.

        With ``controller_in_job`` this submits the job of the controller and every
        engine; ``job_progress`` hears of it (``submitted(jobs)``, then each state)."""
        self._launcher.start_controller(timeout=self.start_timeout, engines=self.n,
                                        progress=job_progress)
        if self.shutdown_atexit and not self._atexit_registered:
            atexit.register(self._stop_at_exit)
            self._atexit_registered = True

    def start_engines_sync(self, n=None):
        """Start ``n`` (default: the cluster's n) more engines; returns their pids.

        Returns as soon as they run (or their jobs are submitted); ``add_engines_sync``
        also waits until they registered, as do ``start_and_connect_sync`` and
        ``wait_for_engines``."""
        return [r.pid for r in self._launcher.start_engines(n or self.n)]

    def add_engines_sync(self, n, rc=None, timeout=None, on_progress=None, on_jobs=None,
                         on_submitted=None):
        """Grow the running cluster by ``n`` engines; return their ids once registered.

        Engines start the way the cluster's did (processes here, or batch jobs shaped
        like the profile). If they do not all register, what this call started is
        stopped again and the error (with the job's output) is raised. ``rc``: a
        connected Client (default: a temporary one); ``on_progress``/``on_jobs`` as for
        ``wait_for_engines``, counting only the new engines; ``on_submitted(jobs)``."""
        return self._with_client(rc, lambda client: add_engines(
            self, client, n, timeout=timeout, on_progress=on_progress, on_jobs=on_jobs,
            on_submitted=on_submitted))

    def _with_client(self, rc, use):
        if rc is not None:
            return use(rc)
        from .client import Client

        client = Client(profile_dir=self.profile_dir, timeout=self.client_timeout)
        try:
            return use(client)
        finally:
            _close_quietly(client)

    def start_cluster_sync(self, n=None):
        """Start the controller, then ``n`` engines (registration not awaited)."""
        self.start_controller_sync()
        if self._launcher.controller_in_job:
            return self  # its job starts the engines
        try:
            self.start_engines_sync(n)
        except BaseException:
            self.stop_cluster_sync()
            raise
        return self

    def connect_client_sync(self, **client_options):
        """A new Client connected to this cluster (closed again by stop_cluster_sync)."""
        from .client import Client

        client_options.setdefault("timeout", self.client_timeout)
        rc = Client(profile_dir=self.profile_dir, **client_options)
        self._clients.append(rc)
        return rc

    def start_and_connect_sync(self, activate=False):
        """Start everything, wait until every engine registered; return a connected Client."""
        if activate:
            raise ValueError("activate=True installs IPython magics; hpclaunch has no IPython "
                             "integration, so call start_and_connect_sync() without it")
        if not self.running:
            self.start_cluster_sync()
        try:
            rc = self.connect_client_sync()
            self.wait_for_engines(rc)
        except BaseException:
            self.stop_cluster_sync()
            raise
        return rc

    def wait_for_engines(self, rc, n=None, timeout=None, on_progress=None, on_jobs=None,
                         launched=None):
        """Block until ``n`` (default: every launched) engines registered with ``rc``.

        Fails with EnginesStartError, quoting the failing engines' logs, as soon as
        so many engines exited that ``n`` cannot be reached, or after ``timeout`` s.
        ``on_progress(engines, n)`` is called whenever the registered set changes,
        with ``engines`` = {id: {"hostname", "pid", ...}}; ``on_jobs({job id: JobState})``
        whenever a batch job's state changes (clusters whose engines run in jobs).
        ``launched`` (a resize.Launched) limits all of it to the engines of one add."""
        n = n or self._launcher.expected_engines()
        timeout = self.start_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        seen = jobs_seen = None
        job_ids = launched.job_ids if launched is not None else None
        while True:
            engines = registered_engines(rc)
            if launched is not None:
                engines = {eid: info for eid, info in engines.items()
                           if launched.owns(eid, info, self.jobs)}
            if on_progress is not None and set(engines) != seen:
                seen = set(engines)
                on_progress(engines, n)
            if len(engines) >= n:
                if on_jobs is not None and self._launcher.submits_jobs:
                    # the last poll may predate the start: show the jobs running now
                    on_jobs({j: s for j, s in self._launcher.jobs.poll(force=True).items()
                             if job_ids is None or j in job_ids})
                return sorted(engines)
            if not self._launcher.controller_running():
                record = self._launcher.state.controller
                raise ControllerStartError(
                    f"the controller (pid {record.pid}) exited while engines were starting; "
                    f"last lines of {record.log}:\n{tail(record.log)}")
            if self._launcher.submits_jobs:
                states = {j: s for j, s in self._launcher.jobs.poll().items()
                          if job_ids is None or j in job_ids}
                if on_jobs is not None and states != jobs_seen:
                    jobs_seen = dict(states)
                    on_jobs(states)
                if len(engines) + self._launcher.jobs.engines_possible(job_ids) < n \
                        or time.monotonic() > deadline:
                    raise self._jobs_failed(engines, n, timeout, job_ids)
                time.sleep(0.1)
                continue
            pending = self._unregistered(engines)
            if launched is not None:
                pending = [r for r in pending if r.pid in launched.pids]
            starting = len(pending) - len(self._launcher.dead_engines(pending)) \
                + self._launcher.fanouts.engines_possible()
            if len(engines) + starting < n or time.monotonic() > deadline:
                raise self._engines_failed(engines, n, pending, timeout)
            time.sleep(0.05)

    def _jobs_failed(self, engines, n, timeout, job_ids=None):
        jobs = self._launcher.jobs
        states = {j: s for j, s in jobs.poll(force=True).items()
                  if job_ids is None or j in job_ids}
        ended = [j for j, state in states.items() if state.finished]
        if ended:
            why = f"job{'s' if len(ended) > 1 else ''} {', '.join(ended)} ended " \
                  f"({', '.join(states[j].value for j in ended)}) before its engines registered"
        else:
            waiting = ", ".join(f"{j} {s.value}" for j, s in states.items())
            why = f"timed out after {timeout:g} s with jobs {waiting}; raise --timeout if " \
                  "the queue is slow"
        return EnginesStartError(f"only {len(engines)} of {n} engines registered: {why}\n"
                                 f"{jobs.describe_failure(job_ids=job_ids)}",
                                 registered=len(engines),
                                 expected=n)

    def _unregistered(self, engines):
        pids = {info.get("pid") for info in engines.values()}
        return [r for r in self._launcher.engine_records() if r.pid not in pids]

    def _engines_failed(self, engines, n, pending, timeout):
        dead = self._launcher.dead_engines(pending)
        failing = dead or pending
        fanouts = self._launcher.fanouts.describe_failure()
        why = f"{len(dead)} exited" if dead else \
            "the srun/mpiexec starting them exited" if fanouts else f"timed out after {timeout:g} s"
        lines = [f"only {len(engines)} of {n} engines registered: {why}"]
        for record in failing[:4]:
            code = self._launcher.system.exit_code(record)
            how = "running" if record not in dead else \
                "exited" + (f", status {code}" if code is not None else "")
            where = f" on {record.host}" if record.host else ""
            lines.append(f"--- {record.role} (pid {record.pid}{where}, {how}); last lines of "
                         f"{record.log}:\n{tail(record.log, lines=12)}")
        if len(failing) > 4:
            lines.append(f"... and {len(failing) - 4} more; see {paths.logs_dir(self.profile_dir)}")
        if fanouts or self._launcher.fanouts.records:
            logs = paths.logs_dir(self.profile_dir)
            lines.append(fanouts or f"(engine output: {logs}/fanout-*.log)")
        return EnginesStartError("\n".join(lines), registered=len(engines), expected=n)

    # -- stopping ------------------------------------------------------------
    def stop_engines_sync(self, engine_ids=None, rc=None, timeout=STOP_TIMEOUT):
        """Stop engines; the controller keeps running.

        With ``engine_ids``, the controller shuts down just those engines; this waits
        until they unregistered, drops their records, ends batch jobs left without
        engines and returns a resize.StoppedEngines saying what it did (``rc``: a
        connected Client, default a temporary one). Without, every engine process
        gets SIGTERM and every batch job is cancelled."""
        if engine_ids is None:
            self._launcher.stop_engines()
            return None
        return self._with_client(rc, lambda client: stop_engines(
            self._launcher, client, engine_ids, timeout=timeout))

    def stop_engine_sync(self, engine_id, rc=None, timeout=STOP_TIMEOUT):
        """Stop one engine by its id (ipyparallel's name); see ``stop_engines_sync``."""
        return self.stop_engines_sync([engine_id], rc=rc, timeout=timeout)

    def stop_cluster_sync(self):
        """Shut down engines and controller; leave no process and no connection file.

        The controller is asked first (it tells engines to leave cleanly); whatever
        is still alive a few seconds later is signalled, then killed."""
        asked = self._ask_controller_to_shut_down()
        for rc in self._clients:
            _close_quietly(rc)
        self._clients = []
        try:
            self._launcher.stop(graceful_wait=GRACEFUL_WAIT if asked else 0.0)
        finally:
            if self._atexit_registered:
                atexit.unregister(self._stop_at_exit)
                self._atexit_registered = False
            if self._owns_profile_dir:
                shutil.rmtree(self.profile_dir, ignore_errors=True)

    def _ask_controller_to_shut_down(self):
        if not self._launcher.controller_running():
            return False
        from .client import Client

        try:
            rc = Client(profile_dir=self.profile_dir, timeout=SHUTDOWN_TIMEOUT)
        except Exception:  # noqa: BLE001 - a dead or wedged controller is signalled instead
            return False
        try:
            rc.shutdown(hub=True)
            return True
        except Exception:  # noqa: BLE001 - same: signals follow
            return False
        finally:
            _close_quietly(rc)

    def _stop_at_exit(self):
        self._atexit_registered = False
        if self._launcher.state is not None:
            self.stop_cluster_sync()

    # -- status --------------------------------------------------------------
    def status_sync(self):
        """Controller and per-engine state, as plain data (what ``hpclaunch status`` shows)."""
        state = self._launcher.state
        if state is None or not self._launcher.controller_running():
            raise ClusterNotRunning(self.profile_dir)
        state.refresh()
        rc = self.connect_client_sync()
        try:
            engines = registered_engines(rc)
            queues = rc.queue_status()
        finally:
            _close_quietly(rc)
            self._clients.remove(rc)
        states = self._launcher.jobs.poll(force=True) if state.jobs else {}
        jobs = [{"job_id": j.job_id, "system": j.system, "state": states[j.job_id].value,
                 "engines": j.engines} for j in state.jobs]
        rows = []
        remote = {r.pid: r.host for r in state.engines if r.host is not None}
        for eid in sorted(engines):
            info, q = engines[eid], queues.get(eid, {})
            waiting = q.get("queue", 0) + q.get("tasks", 0)
            job_id = job_of(info, state.jobs)
            host = remote.get(info.get("pid")) or info.get("hostname", "?")
            rows.append({"id": eid, "host": host, "pid": info.get("pid"),
                         "state": f"busy ({waiting} queued)" if waiting else "idle",
                         "completed": q.get("completed", 0), "job": job_id,
                         "job_state": states[job_id].value if job_id in states else None})
        for record in self._unregistered(engines):
            rows.append({"id": None, "host": record.host or "localhost", "pid": record.pid,
                         "completed": 0,
                         "state": "starting" if self._launcher.system.is_running(record)
                         else "exited"})
        return {"profile_dir": self.profile_dir, "url": state.url, "started": state.started,
                "controller_pid": state.controller.pid, "launched": state.n,
                "unassigned": queues.get("unassigned", 0), "engines": rows, "jobs": jobs}

    # -- context manager and asyncio ------------------------------------------
    def __enter__(self):
        return self.start_and_connect_sync()

    def __exit__(self, *exc):
        self.stop_cluster_sync()

    async def start_controller(self):
        return await asyncio.to_thread(self.start_controller_sync)

    async def start_engines(self, n=None):
        return await asyncio.to_thread(self.start_engines_sync, n)

    async def start_cluster(self, n=None):
        return await asyncio.to_thread(self.start_cluster_sync, n)

    async def start_and_connect(self, activate=False):
        return await asyncio.to_thread(self.start_and_connect_sync, activate)

    async def connect_client(self, **client_options):
        return await asyncio.to_thread(self.connect_client_sync, **client_options)

    async def add_engines(self, n, **options):
        return await asyncio.to_thread(self.add_engines_sync, n, **options)

    async def stop_engines(self, engine_ids=None, **options):
        return await asyncio.to_thread(self.stop_engines_sync, engine_ids, **options)

    async def stop_engine(self, engine_id, **options):
        return await asyncio.to_thread(self.stop_engine_sync, engine_id, **options)

    async def stop_cluster(self):
        return await asyncio.to_thread(self.stop_cluster_sync)

    async def __aenter__(self):
        return await self.start_and_connect()

    async def __aexit__(self, *exc):
        await self.stop_cluster()


def _close_quietly(rc):
    try:
        rc.close()
    except Exception:  # noqa: BLE001 - closing must not mask the reason we stop
        pass
