"""Batch schedulers (Slurm, PBS, SGE, LSF): submit a script, poll its state, cancel it.

Like dask-jobqueue, each scheduler is a small class whose class attributes carry
its facts (commands, job-id pattern, array and memory syntax); the base class does
the common work of running those commands and turning their failures into errors
that quote the scheduler's own words.
"""

import abc
import os
import re
import shlex
import shutil
import subprocess

from .errors import LaunchError
from .jobs import JobState

#: Seconds a scheduler command may take before we call the scheduler unresponsive.
COMMAND_TIMEOUT = 60.0


class SchedulerError(LaunchError):
    """A scheduler command is missing, was rejected, or did not answer."""


class Dialect:
    """What one batch system's scripts and commands look like; enough to render a job."""

    name = None
    #: The jinja2 template in templates/ (a profile's ``template`` overrides it).
    template = None
    submit_command = None
    cancel_command = None
    status_command = None
    #: Finds the job id in the submit command's standard output.
    job_id_regex = r"(\S+)"
    #: How job-script directives start ("#SBATCH", "#PBS", ...), for skip_directives.
    directive_prefix = "#"
    #: What the scheduler replaces with the job id (and array task) in output file names.
    output_job_token = "%j"
    output_array_token = "%A_%a"
    #: Shell that prints the job's nodes, one per line (for fanout = 'ssh').
    node_list_command = "hostname"
    #: The submit command reads the job script on its standard input (bsub).
    submit_reads_stdin = False

    # -- facts used by templates (no scheduler needed to render) -------------
    @classmethod
    def submit_argv(cls, script_path):
        return [cls.submit_command, script_path]

    @staticmethod
    def format_memory(nbytes):
        """Memory for this scheduler's directives (whole megabytes by default)."""
        return f"{max(1, -(-nbytes // (1 << 20)))}M"

    @classmethod
    def mpiexec_argv(cls, profile, engines):
        """``mpiexec -n N`` and the profile's mpiexec_args, for the mpiexec fan-out."""
        return [profile.mpiexec, "-n", str(engines), *profile.mpiexec_args]


class Scheduler(Dialect, abc.ABC):
    """A dialect hpclaunch can also drive: submit, poll (batched) and cancel jobs."""

    # -- running the commands ------------------------------------------------
    def run(self, argv, env=None, check=True, stdin_path=None):
        """Run a scheduler command (``stdin_path``: a file for its standard input);
        SchedulerError quotes its stderr when it fails."""
        if shutil.which(argv[0], path=(env or os.environ).get("PATH")) is None:
            raise SchedulerError(
                f"{argv[0]} is not on PATH, so the {self.name} batch system cannot be used "
                f"from here; run on a {self.name} login node, load the module that provides "
                f"{argv[0]}, or pick another system in the profile")
        try:
            with open(stdin_path or os.devnull, "rb") as stdin:
                result = subprocess.run(argv, capture_output=True, text=True, env=env,
                                        stdin=stdin, timeout=COMMAND_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise SchedulerError(f"{' '.join(argv)} did not answer in {COMMAND_TIMEOUT:g} s; "
                                 f"is the {self.name} controller up?") from None
        if check and result.returncode != 0:
            said = (result.stderr or result.stdout).strip() or "(no output)"
            raise SchedulerError(f"{self.name} rejected `{' '.join(argv)}` "
                                 f"(exit status {result.returncode}): {said}")
        return result

    def submit(self, script_path, env=None):
        """Submit a job script; return the job id the scheduler printed."""
        result = self.run(self.submit_argv(script_path), env=env,
                          stdin_path=script_path if self.submit_reads_stdin else None)
        match = re.search(self.job_id_regex, result.stdout)
        if not match:
            raise SchedulerError(f"could not find a job id in the output of "
                                 f"{self.submit_command}: {result.stdout.strip()!r}")
        return match.group(1)

    def cancel(self, job_ids):
        """Cancel jobs; a job that already ended is not an error."""
        if job_ids:
            self.run([self.cancel_command, *job_ids], check=False)

    @abc.abstractmethod
    def poll(self, job_ids):
        """{job id: JobState} for every job in ``job_ids``, in as few commands as possible."""


_DIALECTS = {}


def register_dialect(cls):
    """Class decorator: make a Dialect (or Scheduler) findable by its ``name``."""
    _DIALECTS[cls.name] = cls
    return cls


def dialect(name):
    """The Dialect class of batch system ``name`` (templates, submit commands, units)."""
    try:
        return _DIALECTS[name]
    except KeyError:
        raise SchedulerError(f"the {name!r} batch system has no job scripts in hpclaunch; "
                             f"known: {', '.join(sorted(_DIALECTS))}") from None


def scheduler(name):
    """A Scheduler instance for ``name``, or a SchedulerError saying what works instead."""
    cls = dialect(name)
    if not issubclass(cls, Scheduler):
        drivable = sorted(n for n, c in _DIALECTS.items() if issubclass(c, Scheduler))
        raise SchedulerError(
            f"hpclaunch renders {name} job scripts but cannot submit and track them yet "
            f"(it can for: {', '.join(drivable)}); print the script with hpclaunch render "
            f"and submit it yourself, or use another system")
    return cls()


def aggregate(states):
    """One state for a job made of several tasks (an array): the least finished wins."""
    states = list(states)
    if not states:
        return JobState.DONE
    for candidate in (JobState.RUNNING, JobState.PENDING):
        if candidate in states:
            return candidate
    for candidate in (JobState.FAILED, JobState.CANCELLED):
        if candidate in states:
            return candidate
    return JobState.DONE


def submit_shell(dialect_cls, script_path):
    """The submit command as a user would type it (what ``hpclaunch render`` prints)."""
    display = getattr(dialect_cls, "submit_display", None)
    return display(script_path) if display else shlex.join(dialect_cls.submit_argv(script_path))
