"""``python -m hpclaunch`` is the ``hpclaunch`` command."""

from .cli import main

main(prog_name="hpclaunch")
