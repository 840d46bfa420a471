"""Profile settings: where and how a cluster's engines start, as one validated dataclass.

``<profile dir>/profile.toml`` holds structured fields (batch system, queue,
walltime, engines per node, ...) rather than raw scheduler directives, so the same
profile renders for any template and a typo is caught before anything is submitted.
"""

import dataclasses
import difflib
import os
import re

from . import toml
from .errors import LaunchError

PROFILE_FILE = "profile.toml"
#: Batch systems a profile may name (an ssh host list is not built yet, so it is not offered).
SYSTEMS = ("local", "slurm", "pbs", "torque", "sge", "lsf")
FANOUTS = ("srun", "mpiexec", "array")
_WALLTIME = re.compile(r"^(\d+):([0-5]\d):([0-5]\d)$")
_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?$", re.I)
_JOBS_SHAPE = re.compile(r"^jobs:(\d+)$")
#: The longest default drain margin (seconds); see Profile.drain_margin_seconds.
DRAIN_MARGIN_CAP = 600
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class ProfileError(LaunchError):
    """A profile file or field is wrong; the message names it and how to fix it."""


@dataclasses.dataclass
class Profile:
    """The launch settings of one profile (every field optional but ``system``)."""

    system: str = "local"
    queue: str = None
    account: str = None
    walltime: str = "01:00:00"
    drain_margin: object = None   # seconds or 'HH:MM:SS'; None: a tenth of the walltime
    nodes: int = None
    engines_per_node: int = None
    cpus_per_engine: int = 1
    memory_per_engine: str = None
    job_shape: str = "one-job"
    fanout: str = None
    env_setup: list = dataclasses.field(default_factory=list)
    extra_directives: list = dataclasses.field(default_factory=list)
    skip_directives: list = dataclasses.field(default_factory=list)
    parallel_environment: str = None
    controller_ip: str = None
    template: str = None
    python: str = None
    job_name: str = "hpclaunch"

    def __post_init__(self):
        self.validate()

    # -- validation ----------------------------------------------------------
    def validate(self):
        """Raise ProfileError naming the first wrong field and what it should be."""
        if self.system not in SYSTEMS:
            raise ProfileError(f"system = {self.system!r} is not a batch system hpclaunch knows; "
                               f"use one of {', '.join(SYSTEMS)}{_closest(self.system, SYSTEMS)}")
        parse_walltime(self.walltime)
        self.drain_margin_seconds()
        for name in ("nodes", "engines_per_node", "cpus_per_engine"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or value < 1):
                raise ProfileError(f"{name} = {value!r} must be a whole number of at least 1")
        if self.memory_per_engine is not None:
            parse_memory(self.memory_per_engine)
        self.jobs_count()
        if self.fanout is not None and self.fanout not in FANOUTS:
            raise ProfileError(f"fanout = {self.fanout!r} is not a fan-out hpclaunch knows; use "
                               f"one of {', '.join(FANOUTS)}{_closest(self.fanout, FANOUTS)}")
        if self.job_shape == "array" and self.fanout not in (None, "array"):
            raise ProfileError(f"job_shape = 'array' starts one engine per array task, so "
                               f"fanout = {self.fanout!r} does not apply; remove fanout or "
                               "set it to 'array'")
        for name in ("env_setup", "extra_directives", "skip_directives"):
            value = getattr(self, name)
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ProfileError(f"{name} must be a list of strings, e.g. "
                                   f"{name} = [\"module load python\"], not {value!r}")

    def jobs_count(self):
        """How many jobs the engines are split into for ``job_shape`` 'jobs:K' (else 1)."""
        if self.job_shape in ("one-job", "array"):
            return 1
        match = _JOBS_SHAPE.match(str(self.job_shape))
        if not match or int(match.group(1)) < 1:
            raise ProfileError(f"job_shape = {self.job_shape!r} is not a job shape; use "
                               "'one-job' (N engines in one job), 'array' (a job array of N "
                               "tasks) or 'jobs:K' (K jobs of N/K engines, K >= 1)")
        return int(match.group(1))

    def drain_margin_seconds(self):
        """Seconds before the walltime ends at which engines in a job stop taking work.

        Unset: the last tenth of the walltime, at most DRAIN_MARGIN_CAP, so a short test
        job still runs most of its time and a long one keeps minutes for a last task.
        0 turns draining off (the scheduler's kill at the walltime then ends the engines)."""
        walltime = parse_walltime(self.walltime)
        if self.drain_margin is None:
            return min(walltime // 10, DRAIN_MARGIN_CAP)
        margin = self.drain_margin
        if isinstance(margin, str) and _WALLTIME.match(margin):
            margin = parse_walltime(margin)
        if not isinstance(margin, int) or isinstance(margin, bool) or margin < 0:
            raise ProfileError(f"drain_margin = {self.drain_margin!r} is not a time: give whole "
                               "seconds (e.g. 300) or 'HH:MM:SS'; 0 turns draining off")
        if margin >= walltime:
            raise ProfileError(f"drain_margin = {self.drain_margin!r} is not shorter than "
                               f"walltime = {self.walltime!r}: engines would drain as soon as "
                               "the job starts; make it smaller than the walltime (or 0: no "
                               "draining)")
        return margin

    @property
    def effective_fanout(self):
        """How engines start inside a job: the array task itself, or srun/mpiexec/ssh."""
        if self.job_shape == "array":
            return "array"
        return self.fanout or ("srun" if self.system == "slurm" else "mpiexec")

    # -- files ---------------------------------------------------------------
    @classmethod
    def from_dict(cls, data, source="profile"):
        """A Profile from a parsed TOML table; unknown keys name the closest valid key."""
        names = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in names:
                raise ProfileError(f"{source}: unknown key {key!r}{_closest(key, names)}; "
                                   f"valid keys: {', '.join(names)}")
        try:
            return cls(**data)
        except ProfileError as e:
            raise ProfileError(f"{source}: {e}") from None

    @classmethod
    def load(cls, path):
        try:
            data = toml.load(path)
        except FileNotFoundError:
            raise ProfileError(f"no profile file at {path}") from None
        except toml.TOMLDecodeError as e:
            raise ProfileError(f"{path} is not valid TOML: {e}") from None
        return cls.from_dict(data, source=path)

    def to_dict(self):
        return dataclasses.asdict(self)

    def save(self, path, header=""):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            f.write(toml.dumps(self.to_dict(), header=header))
        os.replace(tmp, path)


def profile_file(pdir):
    return os.path.join(pdir, PROFILE_FILE)


def load_profile(pdir):
    """The Profile of ``pdir``: its profile.toml, or the local defaults when it has none."""
    path = profile_file(pdir)
    if not os.path.exists(path):
        return Profile()
    return Profile.load(path)


def parse_walltime(value):
    """'HH:MM:SS' -> seconds; anything else is a ProfileError saying the format."""
    match = _WALLTIME.match(str(value))
    if not match:
        raise ProfileError(f"walltime = {value!r} is not HH:MM:SS (e.g. '00:30:00' for half "
                           "an hour, '48:00:00' for two days)")
    hours, minutes, seconds = (int(g) for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def parse_memory(value):
    """'2G', '512M', '1.5GB' -> bytes (binary units, as every scheduler uses them)."""
    match = _MEMORY.match(str(value).strip())
    if not match:
        raise ProfileError(f"memory_per_engine = {value!r} is not an amount of memory; write "
                           "a number and a unit, e.g. '512M' or '2G'")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def _closest(word, choices):
    match = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""
