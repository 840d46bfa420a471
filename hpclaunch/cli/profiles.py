"""``hpclaunch profile create|list|show``: the settings that say where engines start."""

import os

import click


def existing_profile_dir(name):
    """The directory of profile ``name``; a ClickException listing the profiles if missing."""
    from ..protocol import paths

    pdir = paths.profile_dir(name)
    if not os.path.isdir(pdir):
        known = ", ".join(paths.list_profiles()) or "none yet"
        raise click.ClickException(
            f"no profile named {name!r} in {paths.hpclaunch_dir()} (existing: {known}); "
            f"create it with: hpclaunch profile create {name} --system slurm")
    return pdir


@click.group()
def profile():
    """Create, list and show profiles (~/.hpclaunch/profile_NAME/profile.toml)."""


@profile.command("create")
@click.argument("name")
@click.option("--system", default=None, metavar="SYSTEM",
              help="Batch system: local, slurm, pbs (PBS Pro), torque, sge, lsf, mpi "
                   "(one mpiexec here) or ssh (a host list) (default: the site's, else local).")
@click.option("--from-site", "site", default=None, metavar="SITE",
              help="Start from a site-config (see hpclaunch profile sites).")
@click.option("--force", is_flag=True, help="Overwrite an existing profile.toml.")
def create(name, system, site, force):
    """Write a new profile.toml for profile NAME."""
    from ..launch import Profile, ProfileError, profile_file
    from ..launch.sites import load_site, site_path
    from ..protocol import paths

    pdir = paths.profile_dir(name)
    path = profile_file(pdir)
    if os.path.exists(path) and not force:
        raise click.ClickException(f"{path} already exists; edit it, or pass --force to "
                                   "replace it")
    try:
        settings = load_site(site) if site else Profile(system=system or "local")
        if site and system and system != settings.system:
            raise ProfileError(f"site {site!r} uses system = {settings.system!r}, not "
                               f"{system!r}; leave out --system or pick another site")
    except ProfileError as e:
        raise click.ClickException(str(e))
    header = (f"hpclaunch profile {name!r}" + (f", from site-config {site_path(site)}" if site
                                               else "") +
              "\nFields: see `hpclaunch profile show`; preview jobs with "
              f"`hpclaunch render --profile {name} -n N`.")
    settings.save(path, header=header)
    click.echo(f"created profile {name!r} ({settings.system}) at {path}")


@profile.command("list")
def list_profiles():
    """List profiles with their batch system and whether a cluster is running."""
    from ..launch import ProfileError, load_profile, state_file
    from ..protocol import paths

    names = paths.list_profiles()
    if not names:
        click.echo(f"no profiles in {paths.hpclaunch_dir()}; create one with: "
                   "hpclaunch profile create NAME --system slurm")
        return
    for name in names:
        pdir = paths.profile_dir(name)
        try:
            system = load_profile(pdir).system
        except ProfileError:
            system = "(profile.toml has errors: see hpclaunch profile show)"
        running = " (cluster state present)" if os.path.exists(state_file(pdir)) else ""
        click.echo(f"{name:20s} {system}{running}")


@profile.command("show")
@click.argument("name")
def show(name):
    """Show a profile's settings and files (never its key)."""
    from ..launch import ProfileError, load_profile, profile_file
    from ..protocol import paths

    pdir = existing_profile_dir(name)
    try:
        settings = load_profile(pdir)
    except ProfileError as e:
        raise click.ClickException(str(e))
    path = profile_file(pdir)
    click.echo(f"profile {name!r}: {pdir}")
    click.echo(f"settings: {path}" + ("" if os.path.exists(path) else " (absent: defaults)"))
    for key, value in settings.to_dict().items():
        click.echo(f"  {key:22s} {value!r}")
    click.echo(f"connection files: {paths.security_dir(pdir)} (hold the key; not shown)")
    click.echo(f"logs: {paths.logs_dir(pdir)}")


@profile.command("sites")
def sites():
    """List the site-configs that --from-site accepts."""
    from ..launch import ProfileError
    from ..launch.sites import list_sites, load_site, site_source

    try:
        for name in list_sites():
            first = site_source(name).splitlines()
            click.echo(f"{name:20s} {load_site(name).system:6s} {first[0] if first else ''}")
    except ProfileError as e:
        raise click.ClickException(str(e))
