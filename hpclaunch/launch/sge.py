"""Grid Engine (Son of/Univa/Altair GE): qsub -terse to submit, one qstat -xml per poll, qdel.

A job leaves qstat as soon as it ends. For those, the poll asks qacct, which
knows each task's exit status once the qmaster has flushed its accounting file
(every 15 s by default); until then, or where accounting is off, a job nobody
lists any more has ended and counts as DONE (engines that never registered
tell the rest). qacct answers are final, so each job is asked only once per
process: on a big site qacct reads a large accounting file.
"""

import re
import xml.etree.ElementTree as ElementTree

from .dialects import SgeDialect
from .jobs import JobState
from .scheduler import Scheduler, SchedulerError, aggregate, register_dialect

#: Exit statuses of a task killed by SIGKILL/SIGTERM (qdel, or the h_rt limit).
KILLED_STATUSES = {128 + 9, 128 + 15}

#: Final states learnt from qacct, by job id (they never change again).
_accounted = {}


def sge_state(code):
    """A qstat state code ('qw', 'hqw', 'r', 'Rr', 'dr', 'Eqw', 's', ...) -> JobState.

    Jobs in an error state (E) stay PENDING: Grid Engine keeps them in the queue
    until someone runs qdel, so the launcher must still cancel them; ``qstat -j ID``
    shows why. Jobs being deleted (d) stay RUNNING until they leave qstat, so a
    cancel waits for them."""
    if "E" in code:
        return JobState.PENDING
    if "r" in code or "t" in code or "d" in code:
        return JobState.RUNNING
    return JobState.PENDING


def qstat_states(xml_text, job_ids):
    """{job id: [state of each listed task range]} from ``qstat -xml``, for ``job_ids``."""
    try:
        root = ElementTree.fromstring(xml_text)
    except ElementTree.ParseError as e:
        raise SchedulerError(f"qstat -xml printed XML that does not parse ({e}); "
                             f"it began: {xml_text[:200]!r}") from None
    wanted = set(job_ids)
    states = {}
    for entry in root.iter("job_list"):
        job_id = (entry.findtext("JB_job_number") or "").strip()
        if job_id in wanted:
            states.setdefault(job_id, []).append(sge_state((entry.findtext("state") or "").strip()))
    return states


def qacct_state(text):
    """The JobState of one job from ``qacct -j ID`` output (one record per task), or None."""
    states = []
    for record in re.split(r"^=+\s*$", text, flags=re.M):
        failed = re.search(r"^failed\s+(\d+)", record, re.M)
        status = re.search(r"^exit_status\s+(\d+)", record, re.M)
        if not failed or not status:
            continue
        failed, status = int(failed.group(1)), int(status.group(1))
        if failed == 0 and status == 0:
            states.append(JobState.DONE)
        elif status in KILLED_STATUSES:
            states.append(JobState.CANCELLED)
        else:
            states.append(JobState.FAILED)
    return aggregate(states) if states else None


@register_dialect
class SgeScheduler(SgeDialect, Scheduler):
    """Submits, polls and cancels Grid Engine jobs; engines as a job array or one -pe job."""

    #: ``qsub -terse`` prints ``123`` or, for an array, ``123.1-8:1``; without -terse
    #: it says ``Your job-array 123.1-8:1 ("name") has been submitted``.
    job_id_regex = r"^\s*(?:Your job(?:-array)? )?(\d+)"

    def poll(self, job_ids):
        # "123.1-8:1" (an array's full id) and "123" name the same job.
        numbers = {str(j): str(j).split(".")[0] for j in job_ids}
        if not numbers:
            return {}
        # A failing qstat raises: the qmaster is down, which must not read as "all done".
        result = self.run([self.status_command, "-xml"])
        found = qstat_states(result.stdout, numbers.values())
        return {job_id: aggregate(found[number]) if number in found
                else self._accounted_state(number) for job_id, number in numbers.items()}

    def _accounted_state(self, job_id):
        """How a job no longer in qstat ended, per qacct; DONE when qacct has no record yet."""
        if job_id not in _accounted:
            try:
                result = self.run(["qacct", "-j", job_id], check=False)
            except SchedulerError:  # no qacct here, or it timed out on a huge accounting file
                return JobState.DONE
            state = qacct_state(result.stdout) if result.returncode == 0 else None
            if state is None:
                return JobState.DONE
            _accounted[job_id] = state
        return _accounted[job_id]
