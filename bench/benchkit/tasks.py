"""Task bodies executed on the workers/engines.

They live in an importable module (the driver puts ``bench/`` on PYTHONPATH for every
worker) so each peer can ship them by reference and no peer pays for pickling a closure.
"""


def noop():
    """The empty task of the throughput and latency workloads."""
    return None


def noop1(x):
    """The one-argument empty task of the map workloads."""
    return None
