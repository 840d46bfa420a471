"""Shared fixtures: a private HPCLAUNCH_DIR and real local clusters.

Every test talks to real processes over loopback TCP. The session gets its own
HPCLAUNCH_DIR, so tests never touch ~/.hpclaunch and never see another run's
profiles; at the end, any process still naming that directory is reported and
killed, so a failing test cannot leave engines behind on a shared machine.
"""

import os
import shutil
import tempfile
import time

import psutil
import pytest

#: Short heartbeats so dead-engine tests take seconds: dead after ~2 s.
FAST_HEARTBEAT = {"hb_period": 0.5, "hb_liveness": 4}

_saved_env = {}


def pytest_configure(config):
    _saved_env["HPCLAUNCH_DIR"] = os.environ.get("HPCLAUNCH_DIR")
    os.environ["HPCLAUNCH_DIR"] = tempfile.mkdtemp(prefix="hpclaunch-tests-")


def pytest_unconfigure(config):
    root = os.environ.get("HPCLAUNCH_DIR")
    leftovers = processes_under(root) if root else []
    for proc in leftovers:
        try:
            proc.kill()
        except psutil.Error:
            pass
    if leftovers:
        print(f"\nconftest: killed {len(leftovers)} hpclaunch processes the tests left "
              f"behind: {[p.pid for p in leftovers]}")
    if root:
        shutil.rmtree(root, ignore_errors=True)
    if _saved_env.get("HPCLAUNCH_DIR") is None:
        os.environ.pop("HPCLAUNCH_DIR", None)
    else:
        os.environ["HPCLAUNCH_DIR"] = _saved_env["HPCLAUNCH_DIR"]


def processes_under(root):
    """Live processes whose command line names a path inside ``root``."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE or proc.pid == os.getpid():
                continue
            if any(root in word for word in proc.info["cmdline"] or ()):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def alive(pid):
    """Whether process ``pid`` runs (a zombie does not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_until(predicate, timeout=10.0, what=None):
    """Poll ``predicate`` until it is true or ``timeout`` s passed; its last value. With
    ``what`` (a text, or a function giving one), a timeout fails the test naming it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    if predicate():
        return True
    if what is not None:
        raise AssertionError(f"timed out after {timeout} s waiting for "
                             f"{what() if callable(what) else what}")
    return False


@pytest.fixture(scope="module")
def local_cluster():
    """A started hl.Cluster of 4 engines (fast heartbeat) with its connected client."""
    from hpclaunch import Cluster

    cluster = Cluster(n=4, start_timeout=60, **FAST_HEARTBEAT)
    rc = cluster.start_and_connect_sync()
    cluster.test_client = rc
    try:
        yield cluster
    finally:
        cluster.stop_cluster_sync()


@pytest.fixture(scope="module")
def cluster(local_cluster):
    """A connected hl.Client with 4 registered engines (one cluster per test module)."""
    return local_cluster.test_client


@pytest.fixture(scope="module")
def rc(cluster):
    """The same client as ``cluster``, under ipyparallel's usual name."""
    return cluster


@pytest.fixture
def start_cluster():
    """Factory: ``cluster, rc = start_cluster(n=2, **options)``; all stopped after the test.

    Options are hl.Cluster's (profile, engine_args, hb_period, ...); the fast
    heartbeat is the default."""
    started = []

    def start(n=2, connect=True, **options):
        from hpclaunch import Cluster

        for key, value in FAST_HEARTBEAT.items():
            options.setdefault(key, value)
        options.setdefault("start_timeout", 60)
        extra = Cluster(n=n, **options)
        started.append(extra)
        if not connect:
            extra.start_cluster_sync()
            return extra, None
        return extra, extra.start_and_connect_sync()

    yield start
    for extra in reversed(started):
        if extra.controller_pid is not None:
            extra.stop_cluster_sync()
