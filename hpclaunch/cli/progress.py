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


class JobProgress:
    """Prints each batch job once when submitted and again whenever its state changes."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.states = {}

    def submitted(self, jobs):
        for job in jobs:
            shape = f"array of {job.array_size} tasks" if job.array_size else \
                f"{job.engines} engine{'s' if job.engines != 1 else ''}"
            click.echo(f"submitted {job.system} job {job.job_id} ({shape}; script "
                       f"{job.script})", file=self.stream)
            self.states[job.job_id] = None

    def __call__(self, states):
        for job_id, state in states.items():
            if self.states.get(job_id) != state:
                self.states[job_id] = state
                click.echo(f"job {job_id}: {state.value.lower()}", file=self.stream)
