"""The ``hpclaunch`` command: start, stop and inspect clusters; run a controller or engine.

Only click is imported at start-up; each command imports the launcher, client or
server code it needs when it runs, so ``hpclaunch --help`` answers at once.
"""

import click

from .._version import __version__
from .connect import connect
from .engines import engines
from .manage import status, stop
from .passthrough import controller, engine
from .profiles import profile
from .render import render
from .start import start


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hpclaunch")
def main():
    """Start a Python cluster (a controller and engines) and drive it with hl.Client.

    \b
      hpclaunch start -n 4 --daemonize
      python -c "import hpclaunch as hl; print(hl.Client().ids)"
      hpclaunch stop
    """


for _command in (start, stop, status, engines, connect, profile, render, controller, engine):
    main.add_command(_command)

__all__ = ["main"]
