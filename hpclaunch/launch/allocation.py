"""The batch allocation this process runs inside, read from the scheduler's environment.

Batch-script mode (``hpclaunch start --in-job``) starts engines across the job
the user already has, so it must know which scheduler granted it and how many
task slots it holds; every scheduler says so in a few environment variables.
"""

import dataclasses
import os

from .errors import LaunchError


class NotInAllocation(LaunchError):
    """``--in-job`` was used outside a batch job (no scheduler variables set)."""


@dataclasses.dataclass(frozen=True)
class Allocation:
    """One batch job as seen from inside it."""

    system: str
    job_id: str
    #: Task slots granted (engines by default); None when the scheduler does not say.
    size: int
    #: Which variable (or file) ``size`` came from, for messages.
    size_source: str

    def fanout_for(self, profile):
        """How engines start across this job: the profile's srun/mpiexec, else srun inside
        Slurm (it knows the allocation) and mpiexec elsewhere."""
        if profile.fanout in ("srun", "mpiexec"):
            return profile.fanout
        return "srun" if self.system == "slurm" else "mpiexec"


def _count_lines(path):
    try:
        with open(path) as f:
            return sum(1 for line in f if line.strip())
    except OSError:
        return None


def _int(value):
    try:
        number = int(str(value).split("(")[0])
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def current_allocation(environ=None):
    """The Allocation of this process, or NotInAllocation saying what was looked for."""
    env = os.environ if environ is None else environ
    if env.get("SLURM_JOB_ID"):
        # SLURM_NTASKS is set when the job asked for tasks (--ntasks, -n); otherwise one
        # engine per node, as srun without -n starts one task per node.
        for name in ("SLURM_NTASKS", "SLURM_NPROCS", "SLURM_JOB_NUM_NODES"):
            if _int(env.get(name)):
                return Allocation("slurm", env["SLURM_JOB_ID"], _int(env[name]), name)
        return Allocation("slurm", env["SLURM_JOB_ID"], None, "")
    if env.get("PBS_JOBID"):
        nodefile = env.get("PBS_NODEFILE")
        size = _count_lines(nodefile) if nodefile else None
        if size is None and _int(env.get("PBS_NP")):
            return Allocation("pbs", env["PBS_JOBID"], _int(env["PBS_NP"]), "PBS_NP")
        return Allocation("pbs", env["PBS_JOBID"], size,
                          f"lines of PBS_NODEFILE ({nodefile})" if size else "")
    if env.get("LSB_JOBID"):
        return Allocation("lsf", env["LSB_JOBID"], _int(env.get("LSB_DJOB_NUMPROC")),
                          "LSB_DJOB_NUMPROC")
    if env.get("JOB_ID") and (env.get("SGE_ROOT") or env.get("NSLOTS")):
        return Allocation("sge", env["JOB_ID"], _int(env.get("NSLOTS")), "NSLOTS")
    raise NotInAllocation(
        "hpclaunch start --in-job runs inside a batch job, but this shell is not in one (none "
        "of SLURM_JOB_ID, PBS_JOBID, LSB_JOBID, or JOB_ID with SGE_ROOT is set); put the "
        "command in your sbatch/qsub/bsub script, or get an allocation first (e.g. salloc), "
        "or leave out --in-job to submit the engines as jobs from here")
