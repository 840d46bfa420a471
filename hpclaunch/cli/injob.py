"""What ``hpclaunch start`` does differently inside a batch job (``--in-job``) and when the
controller goes into one (``--controller-in-job``): choosing the mode, the engine count
and the controller address, and running the user's driver command."""

import subprocess

import click

#: Where the controller listens inside a job when the profile names no controller_ip:
#: every interface, announced by host name, so engines on other nodes reach it.
IN_JOB_IP = "0.0.0.0"


def choose_mode(in_job, controller_in_job, command, daemonize, settings):
    """(allocation or None, controller in job?) for these options; ClickException if they clash."""
    from ..launch.allocation import NotInAllocation, current_allocation

    if in_job and controller_in_job:
        raise click.UsageError("--in-job runs inside a batch job and --controller-in-job submits "
                               "one; use --in-job in your job script, --controller-in-job on "
                               "the login node")
    if command and not in_job:
        raise click.UsageError(f"a command to run ({' '.join(command)}) needs --in-job: it runs "
                               "inside your batch script once the engines are up, e.g. "
                               "hpclaunch start --in-job -- python driver.py")
    if command and daemonize:
        raise click.UsageError("--daemonize leaves the cluster up for a later hpclaunch stop, "
                               "but a command stops it when it ends; use one of them")
    if not in_job:
        controller_in_job = controller_in_job or settings.controller_in_job
        if controller_in_job and settings.system in ("local", "mpi", "ssh"):
            raise click.UsageError(f"--controller-in-job submits a batch job, but the profile "
                                   f"has system = {settings.system!r}, which has no batch "
                                   "jobs; set system in its profile.toml (hpclaunch profile "
                                   "show)")
        return None, controller_in_job
    try:
        return current_allocation(), False
    except NotInAllocation as e:
        raise click.ClickException(str(e))


def engines_in_allocation(allocation):
    """The default engine count inside a job: its task slots; ClickException when unknown."""
    if allocation.size is None:
        raise click.ClickException(
            f"cannot tell how many engines {allocation.system} job {allocation.job_id} holds "
            "(its scheduler set none of SLURM_NTASKS, PBS_NODEFILE, NSLOTS, LSB_DJOB_NUMPROC); "
            "pass -n N")
    return allocation.size


def run_command(command):
    """Run the user's driver in the foreground; return its exit status (shell convention)."""
    try:
        code = subprocess.run(list(command), check=False).returncode
    except OSError as e:
        click.echo(f"hpclaunch: cannot run {command[0]}: {e.strerror}", err=True)
        return 127
    return 128 - code if code < 0 else code
