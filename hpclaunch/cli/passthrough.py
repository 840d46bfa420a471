"""``hpclaunch controller`` and ``hpclaunch engine``: run one server process in the foreground.

Arguments pass through untouched to the part's own ``main(argv)`` (argparse),
so the command line the launcher uses and the one a user types are the same.
"""

import sys

import click

PASSTHROUGH = {"ignore_unknown_options": True, "allow_extra_args": True,
               "help_option_names": []}


@click.command(context_settings=PASSTHROUGH, add_help_option=False)
@click.pass_context
def controller(ctx):
    """Run a controller (hub + schedulers); try: hpclaunch controller --help."""
    from ..controller.app import main as run

    sys.exit(run(list(ctx.args)))


@click.command(context_settings=PASSTHROUGH, add_help_option=False)
@click.pass_context
def engine(ctx):
    """Run an engine; try: hpclaunch engine --help."""
    from ..engine.app import main as run

    sys.exit(run(list(ctx.args)))
