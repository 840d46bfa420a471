"""Batch jobs as the launcher tracks them: one state enum for every scheduler, one record per job.

Schedulers name states differently (Slurm's CG, PBS's E, LSF's EXIT...); the
launcher and the CLI only ever see these five, so progress and failure handling
are written once.
"""

import dataclasses
import enum


class JobState(enum.Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    DONE = "DONE"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def finished(self):
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


@dataclasses.dataclass
class JobRecord:
    """One submitted job: enough to poll, cancel and explain it from another shell."""

    job_id: str
    system: str
    script: str
    output: str
    engines: int
    array_size: int = 0
    state: str = JobState.PENDING.value
    #: The job runs the controller too (``start --controller-in-job``).
    hosts_controller: bool = False

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data):
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @property
    def job_state(self):
        return JobState(self.state)
