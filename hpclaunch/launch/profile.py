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
#: Batch systems a profile may name ('mpi': one mpiexec here; 'ssh': the hosts of ``hosts``).
SYSTEMS = ("local", "slurm", "pbs", "torque", "sge", "lsf", "mpi", "ssh")
FANOUTS = ("srun", "mpiexec", "ssh", "array")
_WALLTIME = re.compile(r"^(\d+):([0-5]\d):([0-5]\d)$")
_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?$", re.I)
_JOBS_SHAPE = re.compile(r"^jobs:(\d+)$")
_SRUN_MPI = re.compile(r"^[\w.-]+$")
_SSH_OPTION = re.compile(r"^[A-Za-z][A-Za-z0-9]*=\S.*$")
_SSH_EXAMPLES = {"hosts": '["node1", "me@node2:2222"]', "ssh_options": '["Port=2222"]'}
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
    #: Run the controller inside the engines' job (start --controller-in-job) instead of here.
    controller_in_job: bool = False
    template: str = None
    python: str = None
    job_name: str = "hpclaunch"
    #: Engines initialise MPI (--mpi); None means "only if system = 'mpi'".
    mpi: bool = None
    ids_follow_ranks: bool = False
    mpiexec: str = "mpiexec"
    mpiexec_args: list = dataclasses.field(default_factory=list)
    #: srun's --mpi plugin for MPI engines (e.g. 'pmi2' for the mpich wheel); None: Slurm's default.
    srun_mpi: str = None
    hosts: list = dataclasses.field(default_factory=list)
    ssh_key: str = None
    ssh_options: list = dataclasses.field(default_factory=list)
    shared_filesystem: bool = False
    remote_dir: str = ".hpclaunch/ssh"

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
        if not isinstance(self.controller_in_job, bool):
            raise ProfileError(f"controller_in_job = {self.controller_in_job!r} must be true "
                               "or false")
        validate_ssh_fields(self)
        for name in ("env_setup", "extra_directives", "skip_directives", "mpiexec_args"):
            value = getattr(self, name)
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ProfileError(f"{name} must be a list of strings, e.g. "
                                   f"{name} = [\"module load python\"], not {value!r}")
        self.validate_mpi()

    def validate_mpi(self):
        """The MPI fields: booleans, and only combinations that give one MPI world."""
        for name in ("mpi", "ids_follow_ranks"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):
                raise ProfileError(f"{name} = {value!r} must be true or false")
        if self.system == "mpi" and self.mpi is False:
            raise ProfileError("system = 'mpi' starts the engines as the ranks of one mpiexec, "
                               "so they always initialise MPI; remove mpi = false")
        if self.system == "mpi" and (self.job_shape != "one-job" or self.fanout
                                     not in (None, "mpiexec")):
            raise ProfileError("system = 'mpi' starts every engine with one mpiexec here; "
                               "remove job_shape and fanout (or set them to 'one-job' and "
                               "'mpiexec')")
        if not isinstance(self.mpiexec, str) or not self.mpiexec.strip():
            raise ProfileError(f"mpiexec = {self.mpiexec!r} must name the MPI launcher, e.g. "
                               "'mpiexec' or '/path/to/venv/bin/mpiexec'")
        if self.srun_mpi is not None and not _SRUN_MPI.match(str(self.srun_mpi)):
            raise ProfileError(f"srun_mpi = {self.srun_mpi!r} is not an srun --mpi plugin "
                               "name; see srun --mpi=list (e.g. 'pmi2' or 'pmix')")
        if self.ids_follow_ranks:
            self._check_one_mpi_world()

    def _check_one_mpi_world(self):
        """Engine ids can follow ranks only if all engines share one MPI.COMM_WORLD."""
        if not self.uses_mpi:
            raise ProfileError("ids_follow_ranks = true makes each engine's id its MPI rank, "
                               "so the engines must use MPI: set mpi = true (or system = "
                               "'mpi'), or remove ids_follow_ranks")
        if self.system == "local" or self.effective_fanout == "array" or self.jobs_count() > 1:
            raise ProfileError(
                "ids_follow_ranks = true needs every engine in one MPI world, but this "
                f"profile (system = {self.system!r}, job_shape = {self.job_shape!r}) starts "
                "several (each would be rank 0 and ask for engine id 0); use system = 'mpi', "
                "or one job with fanout 'srun' or 'mpiexec', or remove ids_follow_ranks")

    @property
    def uses_mpi(self):
        """Whether engines initialise MPI (asked for, or implied by system = 'mpi')."""
        return bool(self.mpi) or self.system == "mpi"

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


def validate_ssh_fields(profile):
    """Check hosts, ssh_key, ssh_options, shared_filesystem and remote_dir (the ssh system's
    fields; ssh_key and ssh_options also serve fanout = 'ssh' inside batch jobs)."""
    from ..tunnel import TunnelError, parse_sshserver

    for name in ("hosts", "ssh_options"):
        value = getattr(profile, name)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ProfileError(f"{name} must be a list of strings, e.g. {name} = "
                               f"{_SSH_EXAMPLES[name]}, not {value!r}")
    for host in profile.hosts:
        try:
            parse_sshserver(host)
        except TunnelError:
            raise ProfileError(f"hosts: {host!r} is not a host; write [user@]host[:port], "
                               "e.g. \"node1\" or \"me@node2:2222\"") from None
    for option in profile.ssh_options:
        if not _SSH_OPTION.match(option):
            raise ProfileError(f"ssh_options: {option!r} is not an ssh -o option; write "
                               "Name=value, e.g. \"Port=2222\" or \"ConnectTimeout=20\"")
    if profile.ssh_key is not None and (not isinstance(profile.ssh_key, str)
                                        or not profile.ssh_key.strip()):
        raise ProfileError(f"ssh_key = {profile.ssh_key!r} must be the path of a private key "
                           "file, e.g. \"~/.ssh/id_ed25519\" (or leave it out to use ssh's own)")
    if not isinstance(profile.shared_filesystem, bool):
        raise ProfileError(f"shared_filesystem = {profile.shared_filesystem!r} must be true "
                           "(the hosts see this profile dir at the same path) or false")
    if not isinstance(profile.remote_dir, str) or not profile.remote_dir.strip():
        raise ProfileError(f"remote_dir = {profile.remote_dir!r} must be a folder on the hosts "
                           "(relative to the remote home), e.g. \".hpclaunch/ssh\"")


def _closest(word, choices):
    match = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""
