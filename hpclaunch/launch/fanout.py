"""Engines started across the current allocation by one srun or mpiexec (batch-script mode).

Inside a job the user already has, no new job is submitted: one local process
(``srun --ntasks=N ...`` or ``mpiexec -n N ...``) starts every engine on the
allocated nodes. That process is recorded in the cluster state with the number of
engines it carries, so ``status``/``stop`` from another shell find it, and a
fan-out that exits before its engines register fails ``start`` with its output.
Engines drain before the job's walltime as in hpclaunch's own job scripts: the
controller job's script exports HPCLAUNCH_DRAIN_AT (a user's script may too), and
the fan-out passes it to every engine as ``--drain-at``.
"""

import dataclasses
import logging
import os
import shutil

from ..protocol import paths
from .errors import LaunchError
from .processes import ProcessRecord, tail

log = logging.getLogger("hpclaunch.launch")

#: When engines should drain (epoch seconds), as the job templates export it.
DRAIN_VARIABLE = "HPCLAUNCH_DRAIN_AT"

#: How each fan-out starts ``n`` copies of a command, with the profile's CPUs per engine,
#: srun --mpi plugin, mpiexec and mpiexec_args (as the job templates do).
FANOUT_COMMANDS = {
    "srun": lambda n, p: ["srun", f"--ntasks={n}", f"--cpus-per-task={p.cpus_per_engine or 1}",
                          "--kill-on-bad-exit=0"] + ([f"--mpi={p.srun_mpi}"] if p.srun_mpi
                                                     else []),
    "mpiexec": lambda n, p: [p.mpiexec, "-n", str(n), *p.mpiexec_args],
}


@dataclasses.dataclass
class FanoutRecord:
    """One srun/mpiexec process and how many engines it starts."""

    process: ProcessRecord
    engines: int

    def to_dict(self):
        return {"process": self.process.to_dict(), "engines": self.engines}

    @classmethod
    def from_dict(cls, data):
        return cls(ProcessRecord.from_dict(data["process"]), int(data["engines"]))


def fanout_argv(fanout, n, profile, engine_argv, path=None):
    """The command line that starts ``n`` engines; LaunchError if the launcher is missing."""
    if fanout not in FANOUT_COMMANDS:
        raise LaunchError(f"fanout = {fanout!r} cannot start engines inside a job; use "
                          f"one of {', '.join(FANOUT_COMMANDS)}")
    argv = FANOUT_COMMANDS[fanout](n, profile)
    if shutil.which(argv[0], path=path) is None:
        hint = ("srun comes with Slurm; outside Slurm set fanout = 'mpiexec' in the profile"
                if fanout == "srun" else "load your MPI module, pip install mpich, or set "
                                         "the profile's mpiexec to its path")
        raise LaunchError(f"{argv[0]} is not found (PATH or path), so engines cannot be "
                          f"started across this job with fanout = {fanout!r}; {hint}")
    return argv + list(engine_argv)


def drain_args(env):
    """``--drain-at T`` when ``env`` says when to drain; LaunchError for a value that is not
    epoch seconds (the engines would refuse it one by one)."""
    value = env.get(DRAIN_VARIABLE, "").strip()
    if not value:
        return []
    if not value.isdigit():
        raise LaunchError(f"{DRAIN_VARIABLE} = {value!r} is not a time in seconds since 1970 "
                          f"(what `date +%s` prints); fix or unset it")
    return ["--drain-at", value]


class FanoutEngines:
    """The fan-out processes of one cluster, on the launcher's state."""

    def __init__(self, launcher):
        self.launcher = launcher

    @property
    def records(self):
        state = self.launcher.state
        return list(state.fanouts) if state is not None else []

    def start(self, n, fanout, engine_argv=None):
        """Start one fan-out of ``n`` engines on this node; return its FanoutRecord."""
        launcher = self.launcher
        engine_argv = (engine_argv or launcher.engine_argv()) + drain_args(launcher.env)
        argv = fanout_argv(fanout, n, launcher.profile, engine_argv, launcher.env.get("PATH"))
        index = len(self.records) + 1
        log_path = os.path.join(paths.logs_dir(launcher.profile_dir), f"fanout-{index}.log")
        process = launcher.system.start(argv, log_path, f"fanout-{index}", env=launcher.env)
        record = FanoutRecord(process, n)
        launcher.state.update(lambda latest: _add_fanout(latest, record))
        log.info("%s (pid %d) starts %d engines; output in %s", fanout, process.pid, n, log_path)
        return record

    def forget(self, records, grace=5.0):
        """End these fan-outs (srun/mpiexec take their engines with them) and drop them
        from the state; returns the processes that survived SIGKILL."""
        launcher = self.launcher
        leftovers = launcher.system.stop([r.process for r in records], grace=grace)
        gone = {(r.process.pid, r.process.create_time) for r in records}

        def forget(state):
            state.fanouts = [f for f in state.fanouts
                             if (f.process.pid, f.process.create_time) not in gone]
            state.recount()
        launcher.state.update(forget)
        return leftovers

    def engines_possible(self):
        """Engines the fan-outs still running may yet bring up."""
        return sum(f.engines for f in self.records
                   if self.launcher.system.is_running(f.process))

    def describe_failure(self, max_lines=25):
        """The fan-outs that exited, with the last lines of their output (empty if none)."""
        parts = []
        for record in self.records:
            process = record.process
            if self.launcher.system.is_running(process):
                continue
            code = self.launcher.system.exit_code(process)
            parts.append(f"--- {process.cmdline[0]} (pid {process.pid}, {record.engines} "
                         f"engines) exited{'' if code is None else f' with status {code}'}; "
                         f"last lines of {process.log}:\n{tail(process.log, lines=max_lines)}")
        return "\n".join(parts)


def _add_fanout(state, record):
    state.fanouts.append(record)
    state.recount()
