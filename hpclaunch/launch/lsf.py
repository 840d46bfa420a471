"""The IBM Spectrum LSF scheduler: ``bsub < script``, one ``bjobs -json`` per poll, ``bkill``.

bsub prints ``Job <123> is submitted to queue <normal>.``; an array ``name[1-N]`` is
one job id whose elements bjobs lists one record each (same JOBID, own JOBINDEX).
Status uses bjobs' documented customized JSON output (LSF 10.1: ``bjobs -o "..."
-json``), so no column widths or truncated names get in the way.
"""

import json
import signal

from .dialects import LsfDialect
from .jobs import JobState
from .scheduler import Scheduler, SchedulerError, aggregate, register_dialect

LSF_STATES = {
    "PEND": JobState.PENDING, "PSUSP": JobState.PENDING, "WAIT": JobState.PENDING,
    "USUSP": JobState.PENDING, "SSUSP": JobState.PENDING, "PROV": JobState.PENDING,
    "RUN": JobState.RUNNING, "UNKWN": JobState.RUNNING, "ZOMBI": JobState.RUNNING,
    "DONE": JobState.DONE, "EXIT": JobState.FAILED,
}
#: bkill sends SIGINT, then SIGTERM, then SIGKILL: a job it ends exits with 128 + one of them.
KILLED_EXIT_CODES = {128 + signal.SIGINT, 128 + signal.SIGTERM, 128 + signal.SIGKILL}
BJOBS_FIELDS = "jobid jobindex stat exit_code"


def lsf_state(stat, exit_code=""):
    """bjobs' STAT (and EXIT_CODE for EXIT) -> JobState; unknown words count as PENDING."""
    state = LSF_STATES.get((stat or "").strip(), JobState.PENDING)
    if state is JobState.FAILED and str(exit_code).strip().isdigit() \
            and int(exit_code) in KILLED_EXIT_CODES:
        return JobState.CANCELLED
    return state


def parse_bjobs_json(text, job_ids):
    """{job id: JobState} from ``bjobs -o "jobid jobindex stat exit_code" -json`` output.

    Array elements share their array's JOBID and roll up into it. A job bjobs reports
    as not found has aged out of mbatchd's memory (CLEAN_PERIOD): it counts as DONE."""
    if not text.strip():
        return {str(j): JobState.DONE for j in job_ids}
    try:
        records = json.loads(text).get("RECORDS", [])
    except (ValueError, AttributeError) as e:
        raise SchedulerError(f"bjobs -json printed something that is not LSF's JSON ({e}): "
                             f"{text[:200]!r}") from None
    found = {}
    for record in records:
        if record.get("ERROR"):
            continue
        job_id = str(record.get("JOBID", "")).split("[", 1)[0]
        found.setdefault(job_id, []).append(lsf_state(record.get("STAT"),
                                                      record.get("EXIT_CODE", "")))
    return {str(j): aggregate(found.get(str(j), [JobState.DONE])) for j in job_ids}


@register_dialect
class LsfScheduler(LsfDialect, Scheduler):
    """LSF: submit through bsub's standard input, so it reads the script's #BSUB lines."""

    def poll(self, job_ids):
        job_ids = [str(j) for j in job_ids]
        if not job_ids:
            return {}
        # -a includes finished jobs; unknown ids add an ERROR record, not a failure.
        result = self.run([self.status_command, "-a", "-o", BJOBS_FIELDS, "-json", *job_ids],
                          check=False)
        if result.returncode != 0 and not result.stdout.strip():
            # e.g. "LSF is down. Please wait ...": not a sign that the jobs have ended.
            said = result.stderr.strip() or "(no output)"
            raise SchedulerError(f"bjobs could not report job states (exit status "
                                 f"{result.returncode}): {said}")
        return parse_bjobs_json(result.stdout, job_ids)
