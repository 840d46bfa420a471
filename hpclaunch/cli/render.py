"""``hpclaunch render``: print the job scripts and submit commands ``start`` would use."""

import shlex

import click

from .options import profile_options, resolve_profile_dir


@click.command()
@click.option("-n", "n", type=int, required=True, metavar="N", help="Number of engines.")
@profile_options
@click.option("--log-level", default=None, help="Log level the engines would get.")
@click.option("--engine-args", default="", metavar="ARGS",
              help="Extra words for every engine command line (as for start).")
@click.option("--controller-in-job", is_flag=True,
              help="Show the one job that runs the controller and the engines (as for start).")
@click.option("--timeout", type=float, default=60.0, show_default=True,
              help="The start --timeout the controller's job is given (--controller-in-job).")
def render(n, profile, profile_dir, log_level, engine_args, controller_in_job, timeout):
    """Print exactly the scripts and submit commands start would submit; submit nothing.

    For system = 'ssh': the sftp and ssh commands start would run on each host."""
    from ..launch import ClusterLauncher, LaunchError
    from .profiles import existing_profile_dir

    if n < 1:
        raise click.BadParameter(f"a cluster needs at least 1 engine, not {n}",
                                 param_hint="-n")
    pdir = resolve_profile_dir(profile, profile_dir) if profile_dir or not profile \
        else existing_profile_dir(profile)
    try:
        launcher = ClusterLauncher(pdir, log_level=log_level,
                                   engine_args=shlex.split(engine_args),
                                   controller_in_job=controller_in_job)
        if launcher.profile.system == "ssh":
            _echo_host_starts(launcher, n)
            return
        if not launcher.submits_jobs:
            raise LaunchError(f"profile at {pdir} has system = 'local': engines start as "
                              "processes here and there is no job script to show; set "
                              "system in its profile.toml (hpclaunch profile show)")
        jobs = [launcher.controller_job.plan(n, timeout)] if launcher.controller_in_job \
            else launcher.jobs.plan(n)
    except LaunchError as e:
        raise click.ClickException(str(e))
    for job in jobs:
        what = "controller and " if launcher.controller_in_job else ""
        plural = "s" if job.engines != 1 else ""
        click.echo(f"# ---- {job.path} ({what}{job.engines} engine{plural}"
                   f"{', array of ' + str(job.array_size) + ' tasks' if job.array_size else ''})")
        click.echo(job.text, nl=False)
        click.echo(f"# ---- submit with:\n{job.submit}\n")


def _echo_host_starts(launcher, n):
    """The ssh system submits no job: print, per host, the sftp and ssh commands start runs."""
    from ..protocol import paths

    roles = [f"engine-{k}" for k in range(n)]
    for step in launcher.system.plan(launcher.engine_argv(), roles,
                                     paths.logs_dir(launcher.profile_dir)):
        count = len(step.roles)
        click.echo(f"# ---- host {step.host} ({count} engine{'s' if count != 1 else ''})")
        if step.copy:
            click.echo(f"{shlex.join(step.copy)} <<'SFTP'\n{step.copy_batch}SFTP")
        click.echo(f"{shlex.join(step.start)}\n")
