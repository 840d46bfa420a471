"""PBS schedulers, both dialects: PBS Pro/OpenPBS (``pbs``) and Torque (``torque``).

They share qsub/qdel but differ where it matters to a launcher: PBS Pro arrays are
``-J 1-N`` with ids like ``123[].server`` and report status as JSON (``qstat -x -F
json``, which also keeps finished jobs); Torque arrays are ``-t 1-N`` and status is
the ``qstat -f`` text block per job (finished jobs stay as state ``C`` for the
server's keep_completed time). Either way a poll is one qstat call for all jobs.

Slurm's Torque-style wrappers (what the tests drive) know no arrays in qstat: the id
qsub printed is the Slurm array's own record, so its state stands for the array.
"""

import json
import re
import signal

from .dialects import PbsDialect
from .jobs import JobState
from .scheduler import Scheduler, SchedulerError, aggregate, register_dialect

#: One-letter PBS job states (PBS Pro and Torque agree on these) -> the launcher's states.
#: F (finished, PBS Pro), X (finished subjob) and C (completed, Torque) depend on the exit status.
PBS_STATES = {
    "Q": JobState.PENDING, "H": JobState.PENDING, "W": JobState.PENDING,
    "T": JobState.PENDING, "S": JobState.PENDING, "U": JobState.PENDING,
    "M": JobState.PENDING,
    "R": JobState.RUNNING, "E": JobState.RUNNING, "B": JobState.RUNNING,
}
FINISHED = ("F", "X", "C")
#: PBS reports a job killed by signal S as exit status 256 + S; qdel sends SIGTERM (then KILL).
CANCEL_EXIT_STATUSES = (256 + signal.SIGTERM, 256 + signal.SIGKILL)


def short_id(job_id):
    """'123[].pbs01.example.org' -> '123[]': servers print their name in more than one form."""
    return str(job_id).strip().split(".", 1)[0]


def array_parent(job_id):
    """'123[4]' -> '123[]' (the array a subjob belongs to); other ids are returned unchanged."""
    match = re.match(r"^(\d+)\[\d+\]$", job_id)
    return f"{match.group(1)}[]" if match else job_id


def pbs_state(letter, exit_status=None):
    """A PBS one-letter state (plus the exit status of a finished job) -> JobState."""
    letter = (letter or "").strip()
    if letter not in FINISHED:
        return PBS_STATES.get(letter, JobState.PENDING)
    if exit_status is None:
        # PBS Pro keeps no exit status for a job deleted before it ran; Torque's wrappers
        # over Slurm print none at all, so there a C means only "ended".
        return JobState.CANCELLED if letter == "F" else JobState.DONE
    status = int(exit_status)
    if status == 0:
        return JobState.DONE
    if status in CANCEL_EXIT_STATUSES:
        return JobState.CANCELLED
    return JobState.FAILED


def collect(entries, job_ids):
    """{job id: JobState} from (id as qstat printed it, state) pairs; subjobs roll up.

    An array's own entry (``123[]``, state B while it runs) is used only when qstat
    listed none of its subjobs. Jobs qstat no longer knows have left its history:
    they count as DONE, and engines that never registered tell the rest."""
    wanted = {short_id(j): j for j in job_ids}
    own, subjobs = {}, {}
    for printed, state in entries:
        key = short_id(printed)
        if key in wanted:
            own[key] = state
        elif array_parent(key) in wanted:
            subjobs.setdefault(array_parent(key), []).append(state)
    states = {}
    for key, job_id in wanted.items():
        if key in subjobs:
            states[job_id] = aggregate(subjobs[key])
        else:
            states[job_id] = own.get(key, JobState.DONE)
    return states


def parse_pbspro_json(text):
    """(job id, JobState) pairs from ``qstat -x -t -F json`` (PBS Pro 19+ / OpenPBS)."""
    if not text.strip():
        return []
    try:
        jobs = json.loads(text).get("Jobs", {})
    except (ValueError, AttributeError) as e:
        raise SchedulerError(f"qstat -F json printed something that is not PBS Pro's JSON "
                             f"({e}): {text[:200]!r}") from None
    return [(job_id, pbs_state(attrs.get("job_state"), attrs.get("Exit_status")))
            for job_id, attrs in jobs.items()]


def parse_torque_full(text):
    """(job id, JobState) pairs from Torque's ``qstat -f`` blocks ("Job Id: ..." then
    indented "name = value" lines)."""
    entries, job_id, attrs = [], None, {}

    def flush():
        if job_id is not None:
            entries.append((job_id, pbs_state(attrs.get("job_state"),
                                              attrs.get("exit_status"))))

    for line in text.splitlines():
        header = re.match(r"^Job Id:\s*(\S+)", line)
        if header:
            flush()
            job_id, attrs = header.group(1), {}
        elif job_id is not None and "=" in line:
            name, _, value = line.strip().partition("=")
            attrs[name.strip()] = value.strip()
    flush()
    return entries


@register_dialect
class PbsScheduler(PbsDialect, Scheduler):
    """PBS Pro / OpenPBS: ``qsub`` prints ``123.server`` or ``123[].server`` (arrays)."""

    def poll(self, job_ids):
        job_ids = [str(j) for j in job_ids]
        if not job_ids:
            return {}
        # -x keeps finished jobs (history), -t lists array subjobs. Unknown ids only add a
        # message on stderr and a non-zero status; the JSON still holds the others.
        result = self.run([self.status_command, "-x", "-t", "-F", "json", *job_ids],
                          check=False)
        _raise_if_unanswered(self.status_command, result)
        return collect(parse_pbspro_json(result.stdout), job_ids)


@register_dialect
class TorqueScheduler(PbsScheduler):
    """Torque (and Slurm's qsub/qstat/qdel wrappers): ``-t 1-N`` arrays, ``qstat -f`` text."""

    name = "torque"
    template = "torque.sh.j2"
    #: Torque's -o takes no job-id tokens, so each job's output file has a fixed name.
    output_job_token = "torque"
    output_array_token = "torque-array"

    def submit(self, script_path, env=None):
        """qsub the script, repeating its ``#PBS -o`` on the command line.

        Slurm's qsub wrapper replaces the script's -o with its own default (job name.o<id>
        in the current directory), so the path is given again where every qsub reads it."""
        argv = [self.submit_command]
        output = _directive(script_path, "-o")
        if output:
            argv += ["-j", "oe", "-o", output]
        result = self.run([*argv, script_path], env=env)
        match = re.search(self.job_id_regex, result.stdout)
        if not match:
            raise SchedulerError(f"could not find a job id in the output of "
                                 f"{self.submit_command}: {result.stdout.strip()!r}")
        return match.group(1)

    def poll(self, job_ids):
        job_ids = [str(j) for j in job_ids]
        if not job_ids:
            return {}
        result = self.run([self.status_command, "-f", *job_ids], check=False)
        _raise_if_unanswered(self.status_command, result)
        return collect(parse_torque_full(result.stdout), job_ids)


def _raise_if_unanswered(command, result):
    """qstat failing for another reason than unknown job ids (server down, bad option) must
    not read as "every job has ended"; the caller keeps the last known states instead."""
    said = result.stderr.strip()
    if result.returncode != 0 and not result.stdout.strip() and said \
            and "unknown job id" not in said.lower():
        raise SchedulerError(f"{command} could not report job states "
                             f"(exit status {result.returncode}): {said}")


def _directive(script_path, option):
    """The value of the script's first ``#PBS <option> value`` line, or None."""
    try:
        with open(script_path) as f:
            for line in f:
                words = line.split()
                if len(words) >= 3 and words[0] == "#PBS" and words[1] == option:
                    return " ".join(words[2:])
    except OSError as e:
        raise SchedulerError(f"cannot read job script {script_path}: {e}") from None
    return None
