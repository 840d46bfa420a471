"""Showing engines as they register: one updating line on a terminal, plain lines in logs."""

import sys

import click


class RegistrationProgress:
    """Callable for ``Cluster.wait_for_engines(on_progress=...)``."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.shown = set()
        self.line_open = False

    def __call__(self, engines, n):
        if self.tty:
            click.echo(f"\rengines registered: {len(engines)}/{n}", nl=False, file=self.stream)
            self.line_open = True
            return
        for eid in sorted(set(engines) - self.shown):
            self.shown.add(eid)
            info = engines[eid]
            click.echo(f"engine {eid} registered: pid {info.get('pid', '?')} on "
                       f"{info.get('hostname', '?')} ({len(self.shown)}/{n})", file=self.stream)

    def done(self):
        """End the progress line so the next message starts on a fresh one."""
        if self.line_open:
            click.echo("", file=self.stream)
            self.line_open = False
