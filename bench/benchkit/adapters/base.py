"""The adapter contract: the only thing a peer has to write.

Workloads (benchkit/workloads.py) call nothing but these methods, so every peer runs the
identical workload. A method a peer cannot do raises ``Unsupported`` with the reason, and the
workload is reported as skipped with that reason instead of failing the run.
"""


class Unsupported(Exception):
    """This peer cannot do what a workload asks; the message says why (shown in the report)."""


class PeerAdapter:
    #: short name used on the command line and in the results
    name = "base"
    #: {workload: reason} for workloads this peer does not define at all (skipped up front)
    not_defined = {}
    #: names of the transfer paths the bandwidth workload measures; the first is reported
    bandwidth_modes = ("default",)
    #: one line saying which call the automap workload times, recorded with the figure
    automap_how = ""

    def __init__(self, n_workers, options=None):
        self.n = int(n_workers)
        self.options = dict(options or {})

    def _unsupported(self, what):
        raise Unsupported(f"{self.name} has no {what}")

    # -- lifecycle -------------------------------------------------------------------
    def start(self):
        """Start the controller/scheduler and n workers, connect a client, and return only
        when all n workers are registered and able to run tasks (timed by 'start')."""
        self._unsupported("start()")

    def stop(self):
        """Shut everything down; called once, also after errors and timeouts."""

    def info(self):
        """Versions and configuration recorded with the results."""
        return {}

    def worker_pids(self):
        """PIDs of the worker/engine processes (for their idle RSS)."""
        self._unsupported("way to identify its worker processes")

    # -- throughput ------------------------------------------------------------------
    def submit_noop(self):
        """Submit one tasks.noop to the load-balanced interface without blocking; a handle."""
        self._unsupported("load-balanced submit")

    def wait_all(self, handles):
        """Block until every handle's task is complete as far as the client knows."""
        self._unsupported("way to wait for tasks")

    def fetch_results(self, handles):
        """Bring completed results to the client; nothing to do when they came with completion."""
        return None

    # -- map -------------------------------------------------------------------------
    def map_noop(self, count):
        """Blocking map of tasks.noop1 over range(count), one task per item; the results."""
        self._unsupported("map with chunksize=1")

    def automap_noop(self, count):
        """Blocking map of tasks.noop1 over range(count) letting the peer chunk; the results."""
        self._unsupported("map with automatic chunking")

    # -- latency ---------------------------------------------------------------------
    def roundtrip_noop(self):
        """One blocking call of tasks.noop on one worker, result back at the client."""
        self._unsupported("blocking call")

    # -- bandwidth -------------------------------------------------------------------
    def push(self, array, mode="default"):
        """Blocking: store `array` on one worker; return when it is stored there."""
        self._unsupported("push to a worker")

    def pull(self, mode="default"):
        """Blocking: bring the array last pushed back to the client and return it."""
        self._unsupported("pull from a worker")
