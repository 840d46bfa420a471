"""The Slurm scheduler: sbatch --parsable to submit, one squeue call per poll, scancel.

Finished jobs leave squeue after MinJobAge (default 5 minutes); for those the
poll asks sacct, and when accounting is off too, a job nobody knows any more has
ended, so it counts as DONE (engines that never registered tell the rest).
"""

import re

from .jobs import JobState
from .scheduler import Scheduler, aggregate, register_dialect

#: Slurm's long state names -> the launcher's five states.
SLURM_STATES = {
    "PENDING": JobState.PENDING, "CONFIGURING": JobState.PENDING, "REQUEUED": JobState.PENDING,
    "REQUEUE_HOLD": JobState.PENDING, "REQUEUE_FED": JobState.PENDING,
    "RESV_DEL_HOLD": JobState.PENDING, "SUSPENDED": JobState.PENDING,
    "RUNNING": JobState.RUNNING, "COMPLETING": JobState.RUNNING, "STAGE_OUT": JobState.RUNNING,
    "SIGNALING": JobState.RUNNING, "RESIZING": JobState.RUNNING,
    "COMPLETED": JobState.DONE,
    "CANCELLED": JobState.CANCELLED, "REVOKED": JobState.CANCELLED,
    "FAILED": JobState.FAILED, "TIMEOUT": JobState.FAILED, "NODE_FAIL": JobState.FAILED,
    "OUT_OF_MEMORY": JobState.FAILED, "BOOT_FAIL": JobState.FAILED,
    "DEADLINE": JobState.FAILED, "PREEMPTED": JobState.FAILED, "SPECIAL_EXIT": JobState.FAILED,
}


def slurm_state(word):
    """'CANCELLED by 0' or 'RUNNING' -> JobState (unknown words count as PENDING)."""
    return SLURM_STATES.get(word.split()[0].rstrip("+") if word.strip() else "", JobState.PENDING)


@register_dialect
class SlurmScheduler(Scheduler):
    name = "slurm"
    template = "slurm.sh.j2"
    submit_command = "sbatch"
    cancel_command = "scancel"
    status_command = "squeue"
    #: ``sbatch --parsable`` prints ``jobid`` or ``jobid;cluster``.
    job_id_regex = r"^\s*(\d+)"
    directive_prefix = "#SBATCH"
    node_list_command = 'scontrol show hostnames "$SLURM_JOB_NODELIST"'

    @classmethod
    def submit_argv(cls, script_path):
        return [cls.submit_command, "--parsable", script_path]

    def poll(self, job_ids):
        job_ids = [str(j) for j in job_ids]
        if not job_ids:
            return {}
        found = self._squeue(job_ids)
        missing = [j for j in job_ids if j not in found]
        if missing:
            found.update(self._sacct(missing))
        return {j: aggregate(found.get(j, [JobState.DONE])) for j in job_ids}

    def _squeue(self, job_ids):
        """{job id: [state of each task]} for the jobs squeue still knows (one call)."""
        result = self.run([self.status_command, "--noheader", "--states=all",
                           f"--jobs={','.join(job_ids)}", "--format=%F|%T"], check=False)
        return _group(result.stdout, job_ids)

    def _sacct(self, job_ids):
        """The same from accounting, for jobs gone from squeue (empty if accounting is off)."""
        result = self.run(["sacct", "--noheader", "--parsable2", "--allocations",
                           f"--jobs={','.join(job_ids)}", "--format=JobID,State"], check=False)
        if result.returncode != 0:
            return {}
        lines = [f"{re.split(r'[_.]', jid, 1)[0]}|{state}"
                 for jid, _, state in (line.partition("|") for line in result.stdout.splitlines())]
        return _group("\n".join(lines), job_ids)


def _group(text, job_ids):
    wanted = set(job_ids)
    states = {}
    for line in text.splitlines():
        job_id, sep, word = line.strip().partition("|")
        if sep and job_id in wanted:
            states.setdefault(job_id, []).append(slurm_state(word))
    return states
