"""PBS, Grid Engine and LSF job scripts: each system's commands and units, for rendering.

These render and print the submit command (``hpclaunch render``); submitting,
polling and cancelling them from ``hpclaunch start`` comes with their Scheduler
classes, which will subclass these.
"""

import shlex

from .scheduler import Dialect, register_dialect


@register_dialect
class PbsDialect(Dialect):
    """PBS Pro (``qsub -J 1-N`` arrays, ``qstat -x -F json``)."""

    name = "pbs"
    template = "pbs.sh.j2"
    submit_command = "qsub"
    cancel_command = "qdel"
    status_command = "qstat"
    job_id_regex = r"^\s*(\S+)"
    directive_prefix = "#PBS"
    output_job_token = "pbs"
    output_array_token = "^array_index^"
    #: $PBS_NODEFILE lists a node once per slot (Torque too): keep the first of each.
    node_list_command = "awk '!seen[$0]++' \"$PBS_NODEFILE\""

    @staticmethod
    def format_memory(nbytes):
        return f"{max(1, -(-nbytes // (1 << 20)))}mb"


@register_dialect
class SgeDialect(Dialect):
    """Son/Univa/Altair Grid Engine (``qsub -t 1-N``, ``-pe`` for CPUs, ``qstat -xml``)."""

    name = "sge"
    template = "sge.sh.j2"
    submit_command = "qsub"
    cancel_command = "qdel"
    status_command = "qstat"
    job_id_regex = r"Your job(?:-array)? (\d+)"
    directive_prefix = "#$"
    output_job_token = "$JOB_ID"
    output_array_token = "$JOB_ID.$TASK_ID"
    #: $PE_HOSTFILE lines are "host slots queue processors".
    node_list_command = "awk '{print $1}' \"$PE_HOSTFILE\""

    @classmethod
    def submit_argv(cls, script_path):
        return [cls.submit_command, "-terse", script_path]


@register_dialect
class LsfDialect(Dialect):
    """IBM Spectrum LSF (``bsub < script``, ``-J name[1-N]`` arrays, ``bjobs -json``)."""

    name = "lsf"
    template = "lsf.sh.j2"
    submit_command = "bsub"
    cancel_command = "bkill"
    status_command = "bjobs"
    job_id_regex = r"Job <(\d+)>"
    directive_prefix = "#BSUB"
    output_job_token = "%J"
    output_array_token = "%J_%I"
    #: $LSB_MCPU_HOSTS is "host1 4 host2 4"; older setups only have $LSB_HOSTS (a host per slot).
    node_list_command = ("printf '%s\\n' ${LSB_MCPU_HOSTS:-$LSB_HOSTS} | awk -v pairs="
                         "\"${LSB_MCPU_HOSTS:+1}\" '(!pairs || NR % 2) && !seen[$0]++'")

    #: bsub reads #BSUB lines only from standard input.
    submit_reads_stdin = True

    @classmethod
    def submit_argv(cls, script_path):
        return [cls.submit_command]

    @classmethod
    def submit_display(cls, script_path):
        return f"{cls.submit_command} < {shlex.quote(script_path)}"

    @staticmethod
    def format_memory(nbytes):
        """rusage[mem=...] with an explicit unit, so LSF_UNIT_FOR_LIMITS does not matter."""
        return f"{max(1, -(-nbytes // (1 << 20)))}MB"
