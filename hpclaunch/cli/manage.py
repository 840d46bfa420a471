"""``hpclaunch stop`` and ``hpclaunch status``: reattach to a running cluster by its profile."""

import time

import click

from .options import profile_options, resolve_profile_dir


def attach_cluster(profile, profile_dir):
    """The running cluster of a profile, or a ClickException saying there is none."""
    from ..cluster import Cluster
    from ..launch import LaunchError

    try:
        return Cluster.from_file(profile_dir=resolve_profile_dir(profile, profile_dir))
    except LaunchError as e:
        raise click.ClickException(str(e))


@click.command()
@profile_options
def stop(profile, profile_dir):
    """Stop a profile's cluster: controller and engines, leaving no process behind."""
    from ..launch import LaunchError, describe_profile

    cluster = attach_cluster(profile, profile_dir)
    label, _ = describe_profile(cluster.profile_dir)
    pid, jobs = cluster.controller_pid, cluster.jobs
    engines = len(cluster.engine_pids) + sum(f.engines for f in cluster.fanouts)
    try:
        cluster.stop_cluster_sync()
    except LaunchError as e:
        raise click.ClickException(str(e))
    if jobs:
        engines = sum(j.engines for j in jobs)
        where = f" in {jobs[0].system} job{'s' if len(jobs) > 1 else ''} " \
                f"{', '.join(j.job_id for j in jobs)} (none left in the queue)"
    else:
        where = ""
    click.echo(f"stopped the cluster of {label}: controller pid {pid} and {engines} "
               f"engine{'' if engines == 1 else 's'}{where}")


@click.command()
@profile_options
def status(profile, profile_dir):
    """Show a profile's controller and a table of its engines."""
    from ..error import HpclaunchError

    cluster = attach_cluster(profile, profile_dir)
    try:
        info = cluster.status_sync()
    except (HpclaunchError, OSError) as e:
        raise click.ClickException(f"cannot query the controller: {e}")
    click.echo(format_status(info))


def format_status(info):
    """The text of ``hpclaunch status``: a header, then one row per engine."""
    up = _duration(time.time() - info["started"])
    lines = [f"controller: pid {info['controller_pid']} at {info['url']} (up {up})",
             f"profile dir: {info['profile_dir']}",
             f"engines: {sum(r['id'] is not None for r in info['engines'])} registered "
             f"of {info['launched']} launched; {info['unassigned']} tasks unassigned", ""]
    jobs = info.get("jobs") or []
    for job in jobs:
        lines.insert(-1, f"{job['system']} job {job['job_id']}: {job['state']} "
                         f"({job['engines']} engine{'s' if job['engines'] != 1 else ''})")
    header = ("ENGINE", "HOST", "PID", "STATE", "TASKS DONE") + (("JOB", "JOB STATE")
                                                                   if jobs else ())
    rows = [(str(r["id"]) if r["id"] is not None else "-", r["host"], str(r["pid"]),
             r["state"], str(r["completed"]))
            + ((r.get("job") or "-", r.get("job_state") or "-") if jobs else ())
            for r in info["engines"]]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return "\n".join(lines)


def _duration(seconds):
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"
