"""``hpclaunch start``: a controller and N engines, in the foreground or as a daemon."""

import os
import shlex
import signal
import time

import click

from .options import profile_options, resolve_profile_dir


def _at_least_one(_ctx, _param, value):
    if value is not None and value < 1:
        raise click.BadParameter(f"a cluster needs at least 1 engine, not {value}")
    return value


class _Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP (terminal gone), handled like Ctrl-C: stop cleanly, then exit."""


def _raise_terminated(_signum, _frame):
    raise _Terminated()


@click.command(context_settings={"allow_interspersed_args": False})
@click.option("-n", "n", type=int, default=None, callback=_at_least_one, metavar="N",
              help="Number of engines (default: with --in-job the job's task slots, else the "
                   "profile's nodes (ssh: hosts) x engines_per_node, else the number of CPUs "
                   "here).")
@profile_options
@click.option("--daemonize", is_flag=True,
              help="Return once every engine is up and leave the cluster running.")
@click.option("--in-job", is_flag=True,
              help="Inside your own batch job: controller here, engines across the job by "
                   "srun/mpiexec (no job is submitted), then run COMMAND and stop.")
@click.option("--controller-in-job", is_flag=True,
              help="Submit one job that runs the controller and the engines (start --in-job); "
                   "also profile field controller_in_job = true.")
@click.option("--ip", default=None,
              help="Address the controller listens on (default: the profile's controller_ip, "
                   "else 127.0.0.1; inside a job 0.0.0.0, announced by host name).")
@click.option("--port", type=int, default=None, help="Controller port (default: a free one).")
@click.option("--timeout", type=float, default=60.0, show_default=True,
              help="Seconds for the controller and all engines to come up.")
@click.option("--hb-period", type=float, default=None,
              help="Seconds between heartbeats (controller default: 2).")
@click.option("--hb-liveness", type=int, default=None,
              help="Missed heartbeats before an engine counts as dead (default: 3).")
@click.option("--log-level", default=None, help="Log level of controller and engines.")
@click.option("--controller-args", default="", metavar="ARGS",
              help="Extra words for every controller command line (shell quoting).")
@click.option("--engine-args", default="", metavar="ARGS",
              help="Extra words for every engine command line, e.g. '--timeout 30'.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def start(n, profile, profile_dir, daemonize, in_job, controller_in_job, ip, port, timeout,
          hb_period, hb_liveness, log_level, controller_args, engine_args, command):
    """Start a controller here and N engines (here, or as batch jobs per the profile).

    A profile whose profile.toml says system = 'slurm' (see hpclaunch profile)
    submits the engines as jobs and shows each job's state; system = 'mpi' starts
    them as the ranks of one mpiexec here, system = 'ssh' over ssh on the profile's
    hosts. The controller stays on this machine unless --controller-in-job.
    Logs go to PROFILE_DIR/logs. Without --daemonize the cluster runs until
    Ctrl-C (or SIGTERM), then stops; with it, stop it later with hpclaunch stop.

    \b
    In your own sbatch/qsub/bsub script (batch-script mode):
      hpclaunch start --in-job --profile P -- python driver.py
    starts the controller and one engine per task slot, runs the driver (whose
    hl.Client(profile='P') finds the cluster), stops everything and exits with
    the driver's status.
    """
    from ..cluster import Cluster
    from ..error import HpclaunchError
    from ..launch import describe_profile, load_profile, tail
    from .injob import IN_JOB_IP, choose_mode, engines_in_allocation, run_command
    from .progress import JobProgress, RegistrationProgress

    pdir = resolve_profile_dir(profile, profile_dir)
    label, option = describe_profile(pdir)
    try:
        settings = load_profile(pdir)
    except HpclaunchError as e:
        raise click.ClickException(str(e))
    allocation, controller_in_job = choose_mode(in_job, controller_in_job, command, daemonize,
                                                settings)
    if allocation is not None:
        n = n or engines_in_allocation(allocation)
        ip = ip or settings.controller_ip or IN_JOB_IP
    elif not controller_in_job:  # else the job picks its address (profile, or --ip if given)
        ip = ip or settings.controller_ip or "127.0.0.1"
    nodes = len(settings.hosts) if settings.system == "ssh" else settings.nodes
    whole_nodes = (nodes or 0) * (settings.engines_per_node or 0)
    cluster = Cluster(n=n or whole_nodes or os.cpu_count() or 1, profile_dir=pdir,
                      log_level=log_level, controller_ip=ip, controller_port=port,
                      hb_period=hb_period, hb_liveness=hb_liveness, start_timeout=timeout,
                      controller_args=shlex.split(controller_args),
                      engine_args=shlex.split(engine_args), shutdown_atexit=not daemonize,
                      allocation=allocation, controller_in_job=controller_in_job)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_terminated)
    progress = RegistrationProgress()
    job_progress = JobProgress()
    up = False
    try:
        cluster.start_controller_sync(job_progress=job_progress)
        where = f"; inside {allocation.system} job {allocation.job_id}, engines by " \
                f"{allocation.fanout_for(settings)}" if allocation else \
                f"; inside {cluster.jobs[0].system} job {cluster.jobs[0].job_id}" \
                if controller_in_job else ""
        click.echo(f"controller pid {cluster.controller_pid} listening at {cluster.url} "
                   f"({label}{where})")
        if settings.system not in ("local", "mpi") and not (allocation or controller_in_job) \
                and ip.startswith("127."):
            where = "on ssh hosts" if settings.system == "ssh" else f"in {settings.system} jobs"
            click.echo(f"note: engines {where} reach the controller only if "
                       f"they run on this machine; for compute nodes set controller_ip in "
                       f"{pdir}/profile.toml (or pass --ip)")
        if not controller_in_job:  # else the controller's job starts them
            cluster.start_engines_sync()
        if not (allocation or controller_in_job):
            job_progress.submitted(cluster.jobs)
        rc = cluster.connect_client_sync()
        cluster.wait_for_engines(rc, on_progress=progress, on_jobs=job_progress)
        progress.done()
        rc.close()
        up = True
        click.echo(f"cluster of {cluster.n} engine{'' if cluster.n == 1 else 's'} is up "
                   f"({label}, logs in {pdir}/logs)")
        if daemonize:
            click.echo(f"running in the background; stop it with: hpclaunch stop {option}")
            return
        if not command:
            click.echo("running in the foreground; press Ctrl-C to stop it")
        while cluster.running and not command:
            time.sleep(0.5)
    except KeyboardInterrupt:
        progress.done()
        if up:
            _stop(cluster, "stopping the cluster")
            return
        _stop(cluster, "interrupted before every engine registered; stopping the cluster")
        raise SystemExit(130)
    except HpclaunchError as e:
        progress.done()
        if cluster.controller_pid is not None:
            _stop(cluster, "")
        raise click.ClickException(str(e))
    except BaseException:
        progress.done()
        if cluster.controller_pid is not None:
            _stop(cluster, "stopping the cluster after an unexpected error")
        raise
    if command:
        _run_and_stop(cluster, command, run_command)
    code = cluster.controller_exit_code
    if controller_in_job:
        _stop(cluster, "the controller's job ended (or its controller was shut down); "
                       "cluster stopped")
        return
    if code == 0:
        _stop(cluster, "the controller was shut down (hpclaunch stop, or a client's "
                       "shutdown(hub=True)); cluster stopped")
        return
    controller_log = os.path.join(pdir, "logs", "controller.log")
    _stop(cluster, "")
    raise click.ClickException(f"the controller exited unexpectedly (status {code}); last lines "
                               f"of {controller_log}:\n{tail(controller_log)}")


def _run_and_stop(cluster, command, run_command):
    """Run the driver, stop the cluster, exit with the driver's status (never returns)."""
    click.echo(f"running: {shlex.join(command)}")
    try:
        code = run_command(command)
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM (scancel, walltime): the driver was killed
        code = 130
    _stop(cluster, f"{command[0]} exited with status {code}; stopping the cluster")
    raise SystemExit(code)


def _stop(cluster, message):
    """Stop the cluster; a second Ctrl-C must not abandon processes half way."""
    if message:
        click.echo(message)
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in signals}
    try:
        cluster.stop_cluster_sync()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
