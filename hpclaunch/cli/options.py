"""Options shared by several commands, and how they name a profile directory."""

import click


def profile_options(command):
    """Add ``--profile`` and ``--profile-dir`` (the latter wins) to a command."""
    command = click.option(
        "--profile-dir", type=click.Path(file_okay=False),
        help="Profile directory (overrides --profile).")(command)
    return click.option(
        "--profile", default=None, metavar="NAME",
        help="Profile name: $HPCLAUNCH_DIR/profile_NAME (default: 'default').")(command)


def resolve_profile_dir(profile, profile_dir):
    from ..protocol import paths

    return paths.profile_dir(profile, profile_dir)
