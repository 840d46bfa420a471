"""The cluster state file: what a profile's launcher started, so any shell can reattach.

``<profile dir>/cluster.json`` records the batch system, the controller and engine
processes (with the host they run on: inside a batch job that is not the login node),
the controller URL and when it all started. ``hpclaunch stop`` and
``status`` read it from another shell (or after ``start --daemonize`` returned).
Written atomically, so a reader never sees half a file; changed under a lock
(``update``), so two shells growing or shrinking one cluster never undo each other.
"""

import contextlib
import fcntl
import json
import os
import socket
import tempfile
import time

from .fanout import FanoutRecord
from .jobs import JobRecord
from .processes import ProcessRecord

STATE_FILE = "cluster.json"
STATE_VERSION = 1
LOCK_FILE = ".cluster.lock"


def state_file(pdir):
    return os.path.join(pdir, STATE_FILE)


class ClusterState:
    """What one launch of a profile's cluster consists of."""

    def __init__(self, profile_dir, batch_system="local", controller=None, engines=(),
                 url=None, n=0, started=None, launcher_pid=None, jobs=(), engine_argv=None,
                 fanouts=(), host=None, extra_env=None):
        self.profile_dir = os.path.abspath(profile_dir)
        self.batch_system = batch_system
        self.controller = controller
        self.engines = list(engines)
        #: Batch jobs running engines (JobRecords); empty for a local cluster.
        self.jobs = list(jobs)
        #: srun/mpiexec processes starting engines across an allocation (FanoutRecords).
        self.fanouts = list(fanouts)
        #: Where the recorded processes run; pids mean nothing on another host.
        self.host = host or socket.gethostname()
        self.url = url
        self.n = n
        self.started = started if started is not None else time.time()
        self.launcher_pid = launcher_pid if launcher_pid is not None else os.getpid()
        #: The engine command line of the first start, so engines added later from
        #: another shell are started the same way.
        self.engine_argv = list(engine_argv) if engine_argv else None
        #: The environment variables the cluster was started with on top of the launching
        #: shell's (``Cluster(env=...)``), for the same reason.
        self.extra_env = dict(extra_env or {})

    @property
    def path(self):
        return state_file(self.profile_dir)

    def to_dict(self):
        return {
            "version": STATE_VERSION,
            "profile_dir": self.profile_dir,
            "batch_system": self.batch_system,
            "controller": self.controller.to_dict() if self.controller else None,
            "engines": [e.to_dict() for e in self.engines],
            "jobs": [j.to_dict() for j in self.jobs],
            "fanouts": [f.to_dict() for f in self.fanouts],
            "host": self.host,
            "url": self.url,
            "n": self.n,
            "started": self.started,
            "launcher_pid": self.launcher_pid,
            "engine_argv": self.engine_argv,
            "extra_env": self.extra_env,
        }

    @classmethod
    def from_dict(cls, data, profile_dir):
        controller = data.get("controller")
        return cls(
            profile_dir,
            batch_system=data.get("batch_system", "local"),
            controller=ProcessRecord.from_dict(controller) if controller else None,
            engines=[ProcessRecord.from_dict(e) for e in data.get("engines", [])],
            url=data.get("url"),
            n=data.get("n", 0),
            started=data.get("started"),
            launcher_pid=data.get("launcher_pid"),
            jobs=[JobRecord.from_dict(j) for j in data.get("jobs", [])],
            engine_argv=data.get("engine_argv"),
            fanouts=[FanoutRecord.from_dict(f) for f in data.get("fanouts", [])],
            host=data.get("host"),
            extra_env=data.get("extra_env"),
        )

    def save(self):
        """Atomically (re)write the state file."""
        os.makedirs(self.profile_dir, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".cluster-", suffix=".json", dir=self.profile_dir)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.to_dict(), f, indent=2)
                f.write("\n")
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    @classmethod
    def load(cls, pdir):
        """The saved state of ``pdir``, or None when there is none (or it is unreadable)."""
        try:
            with open(state_file(pdir)) as f:
                data = json.load(f)
            return cls.from_dict(data, pdir)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            # A damaged state file names no process we could safely signal.
            return None

    def update(self, change):
        """Apply ``change(state)`` to the saved state under the profile's lock, and adopt it.

        Another shell (``hpclaunch engines add/stop``) may have changed the file since
        we read it, and writing our copy would drop its engines or jobs. When the file
        is gone or names another controller, this cluster was stopped meanwhile:
        ``change`` then applies to our copy only, so a stopped cluster never reappears."""
        with _locked(self.profile_dir):
            latest = ClusterState.load(self.profile_dir)
            if latest is None or not self._same_controller(latest):
                change(self)
                return
            change(latest)
            latest.save()
        self.__dict__.update(latest.__dict__)

    def refresh(self):
        """Adopt the saved state if it is still this cluster's (another shell may have
        added or stopped engines since we read it)."""
        latest = ClusterState.load(self.profile_dir)
        if latest is not None and self._same_controller(latest):
            self.__dict__.update(latest.__dict__)

    def recount(self):
        """Set ``n``: engines started as processes here, inside batch jobs, and by fan-outs
        (which, under controller-in-job, start the engines the hosting job was sized for)."""
        hosted = sum(j.engines for j in self.jobs if j.hosts_controller)
        fanned = sum(f.engines for f in self.fanouts)
        self.n = (len(self.engines) + sum(j.engines for j in self.jobs if not j.hosts_controller)
                  + max(hosted, fanned))

    def _same_controller(self, other):
        mine, theirs = self.controller, other.controller
        if mine is None or theirs is None:
            return mine is theirs
        return mine.pid == theirs.pid and mine.create_time == theirs.create_time

    def remove(self):
        with _locked(self.profile_dir):
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    def runs_here(self):
        """Whether the recorded processes run on this host (so their pids can be checked)."""
        return self.host == socket.gethostname()

    def all_records(self):
        """Every recorded process on this host (none when they run on another node)."""
        if not self.runs_here():
            return []
        return (([self.controller] if self.controller else []) + self.engines
                + [f.process for f in self.fanouts])

    def controller_alive(self):
        return (self.controller is not None and self.runs_here()
                and self.controller.is_alive())

    def living_engines(self):
        return [e for e in self.engines if e.is_alive()]


@contextlib.contextmanager
def _locked(pdir):
    """Hold the profile's state lock (between reading and rewriting the state file)."""
    os.makedirs(pdir, exist_ok=True)
    with open(os.path.join(pdir, LOCK_FILE), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
