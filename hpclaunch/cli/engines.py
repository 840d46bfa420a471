"""``hpclaunch engines add|stop``: grow or shrink a running cluster from any shell."""

import click

from .options import profile_options


@click.group()
def engines():
    """Add engines to a running cluster, or stop some of its engines.

    \b
      hpclaunch engines add -n 4 --profile slurm
      hpclaunch engines stop 0 1 --profile slurm
      hpclaunch status --profile slurm

    Added engines start the way the cluster's first engines did: processes on this
    machine for a local profile, batch jobs shaped like the profile (one job of N,
    an array, or jobs:K) otherwise. Stopped engines finish the task at hand, leave,
    and their processes end; a batch job left without engines leaves the queue.
    The controller keeps running even with no engine left.
    """


@engines.command("add")
@click.option("-n", "n", type=click.IntRange(min=1), required=True, metavar="K",
              help="How many engines to add (at least 1).")
@profile_options
@click.option("--timeout", type=float, default=60.0, show_default=True,
              help="Seconds for the new engines to register (queue wait included).")
def add(n, profile, profile_dir, timeout):
    """Start K more engines and wait until they registered.

    Shows each submitted job and its state, then the engines as they register
    (k/K). If they do not all come up, what this command started is stopped
    again, and the scheduler's message or the job's output is shown.
    """
    from ..error import HpclaunchError
    from ..launch import describe_profile
    from .manage import attach_cluster
    from .progress import JobProgress, RegistrationProgress

    cluster = attach_cluster(profile, profile_dir)
    label, _ = describe_profile(cluster.profile_dir)
    progress, job_progress = RegistrationProgress(), JobProgress()
    try:
        new = cluster.add_engines_sync(n, timeout=timeout, on_progress=progress,
                                       on_jobs=job_progress, on_submitted=job_progress.submitted)
    except HpclaunchError as e:
        progress.done()
        outcome = "the cluster is as it was" if cluster.running else \
            "the cluster was stopped meanwhile"
        raise click.ClickException(f"adding {n} engine{'s' if n != 1 else ''} failed; "
                                   f"{outcome}. {e}")
    except KeyboardInterrupt:
        progress.done()
        click.echo("interrupted; the engines this command started were stopped again")
        raise SystemExit(130)
    progress.done()
    total = cluster.engines_launched
    click.echo(f"added engine{'s' if n != 1 else ''} {', '.join(map(str, new))} to the cluster "
               f"of {label}; it now has {total} engine{'s' if total != 1 else ''}")


@engines.command("stop")
@click.argument("engine_ids", nargs=-1, required=True, type=int, metavar="ID...")
@profile_options
@click.option("--timeout", type=float, default=30.0, show_default=True,
              help="Seconds the engines get to leave; local engines still busy then get "
                   "SIGTERM, which interrupts their task.")
def stop(engine_ids, profile, profile_dir, timeout):
    """Stop engines by id (from hpclaunch status); the controller keeps running.

    Each engine is asked, through the controller, to leave once its current task
    is done; this waits until it unregistered and its process (or job) ended.
    """
    from ..error import HpclaunchError
    from ..launch import describe_profile
    from .manage import attach_cluster

    cluster = attach_cluster(profile, profile_dir)
    label, _ = describe_profile(cluster.profile_dir)
    try:
        report = cluster.stop_engines_sync(list(engine_ids), timeout=timeout)
    except HpclaunchError as e:
        raise click.ClickException(str(e))
    for engine in report.engines:
        where = f", {engine['system']} job {engine['job']}" if engine["job"] else ""
        how = " (sent SIGTERM: it was busy)" if engine["id"] in report.signalled else ""
        click.echo(f"stopped engine {engine['id']} (pid {engine['pid']} on "
                   f"{engine['host']}{where}){how}")
    jobs = cluster.jobs
    for job_id in report.ended_jobs:
        how = "cancelled" if job_id in report.cancelled_jobs else "ended"
        click.echo(f"job {job_id} {how}: all its engines stopped; it left the queue")
    left = report.remaining
    click.echo(f"the cluster of {label} has {left} engine{'s' if left != 1 else ''} left; "
               f"its controller keeps running" + (f" (jobs still running them: "
                                                  f"{', '.join(j.job_id for j in jobs)})"
                                                  if jobs else ""))
