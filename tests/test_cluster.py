"""hl.Cluster against real processes: start, connect, reattach, fail clearly, leave nothing."""

import asyncio
import os
import re
import signal
import socket
import time

import pytest

import hpclaunch as hl
from hpclaunch.launch import (
    ClusterAlreadyRunning,
    ClusterNotRunning,
    ControllerStartError,
    EnginesStartError,
    state_file,
)
from hpclaunch.launch.launcher import child_env
from hpclaunch.protocol import SIGNATURE_SCHEME, new_key, paths, write_connection_file

from conftest import FAST_HEARTBEAT, alive, wait_until


def test_module_cluster_has_four_engines_running_in_the_launched_processes(local_cluster, rc):
    assert len(rc.ids) == 4
    assert len(local_cluster.engine_pids) == 4
    pids = rc[:].apply_sync(os.getpid)
    assert sorted(pids) == sorted(local_cluster.engine_pids)
    assert local_cluster.url.startswith("tcp://127.0.0.1:")


def _thp_mode():
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return re.search(r"\[(\w+)\]", f.read()).group(1)
    except OSError:
        return "absent"


def test_engines_malloc_on_huge_pages(local_cluster, rc):
    """Launched processes get glibc's huge-page tunable; where THP is on request (madvise, the
    Debian default) an engine's big buffers then really are on 2 MiB pages."""
    tunables = rc[0].apply_sync(lambda: __import__("os").environ.get("GLIBC_TUNABLES"))
    assert "glibc.malloc.hugetlb=1" in tunables.split(":")
    if _thp_mode() != "madvise":
        pytest.skip(f"transparent huge pages are {_thp_mode()!r} here, not 'madvise'")

    def huge_pages_after_touching_64_mib():
        """On an engine: kB of anonymous huge pages this process holds once 64 MiB are written."""
        import re

        def anon_huge_kb():
            with open("/proc/self/smaps_rollup") as f:
                return int(re.search(r"AnonHugePages:\s+(\d+) kB", f.read()).group(1))

        before = anon_huge_kb()
        block = b"\1" * (64 << 20)  # malloc'd (an mmap at this size) and written
        grown = anon_huge_kb() - before
        del block
        return grown

    assert rc[0].apply_sync(huge_pages_after_touching_64_mib) >= 32 * 1024


def test_huge_pages_keep_the_users_own_glibc_tunables(monkeypatch):
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")
    assert child_env()["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=0")
    assert child_env()["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=0"
    assert child_env({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=2"})["GLIBC_TUNABLES"] == \
        "glibc.malloc.hugetlb=2"


def test_status_reports_every_engine_idle_with_its_done_tasks(local_cluster, rc):
    before = {r["id"]: r["completed"] for r in local_cluster.status_sync()["engines"]}
    rc[:].apply_sync(os.getpid)
    status = local_cluster.status_sync()
    assert status["controller_pid"] == local_cluster.controller_pid
    assert status["url"] == local_cluster.url
    assert status["launched"] == 4
    rows = status["engines"]
    assert [r["id"] for r in rows] == sorted(rc.ids)
    assert sorted(r["pid"] for r in rows) == sorted(local_cluster.engine_pids)
    assert {r["state"] for r in rows} == {"idle"}
    assert {r["id"]: r["completed"] - before[r["id"]] for r in rows} == dict.fromkeys(rc.ids, 1)


def test_context_manager_starts_connects_and_leaves_nothing():
    cluster = hl.Cluster(n=2, **FAST_HEARTBEAT)
    with cluster as rc:
        assert len(rc.ids) == 2
        pids = [cluster.controller_pid, *cluster.engine_pids]
        pdir = cluster.profile_dir
        assert os.path.isfile(state_file(pdir))
        assert all(alive(p) for p in pids)
    assert not any(alive(p) for p in pids)
    assert not os.path.exists(pdir), "a fresh profile dir is removed on stop"


def test_fresh_profiles_let_clusters_coexist(start_cluster):
    first, rc1 = start_cluster(n=1)
    second, rc2 = start_cluster(n=1)
    assert first.profile_dir != second.profile_dir
    assert first.url != second.url
    assert len(rc1.ids) == len(rc2.ids) == 1


def test_named_profile_refuses_a_second_start(start_cluster):
    first, _ = start_cluster(n=1, profile="twice", connect=False)
    second = hl.Cluster(n=1, profile="twice")
    with pytest.raises(ClusterAlreadyRunning) as err:
        second.start_controller_sync()
    message = str(err.value)
    assert f"already running (pid {first.controller_pid})" in message
    assert "hpclaunch stop --profile twice first" in message
    assert first.running


def test_from_file_reattaches_and_stop_cleans_everything(start_cluster):
    first, rc = start_cluster(n=2, profile="reattach")
    pids = [first.controller_pid, *first.engine_pids]
    pdir = first.profile_dir
    again = hl.Cluster.from_file(profile="reattach")
    assert again.controller_pid == first.controller_pid
    assert again.engine_pids == first.engine_pids
    again.stop_cluster_sync()
    assert wait_until(lambda: not any(alive(p) for p in pids), 2)
    assert not os.path.exists(state_file(pdir))
    assert not os.path.exists(paths.client_file(pdir))
    assert not os.path.exists(paths.engine_file(pdir))
    assert os.path.isdir(paths.logs_dir(pdir)), "a named profile keeps its logs"
    with pytest.raises(ClusterNotRunning, match="no cluster is running for profile 'reattach'"):
        hl.Cluster.from_file(profile="reattach")


def test_stale_state_is_detected_and_cleaned(start_cluster):
    first, _ = start_cluster(n=2, profile="stale", connect=False)
    engines = first.engine_pids
    os.kill(first.controller_pid, signal.SIGKILL)
    assert wait_until(lambda: not first.running)
    with pytest.raises(ClusterNotRunning, match="cleaned up stale state"):
        hl.Cluster.from_file(profile="stale")
    assert not any(alive(p) for p in engines), "stale engines are ended too"
    assert not os.path.exists(state_file(first.profile_dir))
    # and the profile is usable again at once
    second, rc = start_cluster(n=1, profile="stale")
    assert len(rc.ids) == 1


def test_engines_that_cannot_start_fail_fast_with_their_log(start_cluster):
    started = time.monotonic()
    with pytest.raises(EnginesStartError) as err:
        start_cluster(n=2, engine_args=["--no-such-option"])
    assert time.monotonic() - started < 30, "dead engines are noticed before the timeout"
    message = str(err.value)
    assert re.search(r"only 0 of 2 engines registered: [12] exited", message)
    assert "--no-such-option" in message, "the engine's own complaint is quoted"
    assert err.value.registered == 0 and err.value.expected == 2


def test_engines_that_stay_silent_time_out_and_are_stopped(start_cluster, tmp_path):
    nowhere = str(tmp_path / "security" / "engine.json")
    write_connection_file(nowhere, {"url": f"tcp://127.0.0.1:{unused_port()}",
                                    "key": new_key(), "signature_scheme": SIGNATURE_SCHEME})
    with pytest.raises(EnginesStartError) as err:
        start_cluster(n=1, start_timeout=3, engine_args=["--file", nowhere])
    message = str(err.value)
    assert "only 0 of 1 engines registered: timed out after 3 s" in message
    assert re.search(r"--- engine-0 \(pid (\d+), running\)", message)
    pid = int(re.search(r"engine-0 \(pid (\d+)", message).group(1))
    assert not alive(pid), "a silent engine is stopped with the cluster"


def unused_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_controller_that_cannot_start_is_reported_with_its_log(tmp_path):
    cluster = hl.Cluster(n=1, profile_dir=str(tmp_path / "bad"),
                         controller_args=["--no-such-option"])
    with pytest.raises(ControllerStartError) as err:
        cluster.start_cluster_sync()
    assert "exited" in str(err.value) and "--no-such-option" in str(err.value)
    assert cluster.controller_pid is None


def test_stop_engines_keeps_the_controller_and_more_can_join(start_cluster):
    cluster, rc = start_cluster(n=2)
    old = cluster.engine_pids
    cluster.stop_engines_sync()
    assert not any(alive(p) for p in old)
    assert cluster.running
    assert wait_until(lambda: len(rc.ids) == 0, 10)
    new = cluster.start_engines_sync(1)
    assert cluster.wait_for_engines(rc, n=1, timeout=30)
    assert rc[:].apply_sync(os.getpid) == new


def test_async_start_and_stop():
    async def run():
        cluster = hl.Cluster(n=1, **FAST_HEARTBEAT)
        await cluster.start_cluster()
        rc = await cluster.connect_client()
        ids = await asyncio.to_thread(cluster.wait_for_engines, rc)
        pids = [cluster.controller_pid, *cluster.engine_pids]
        await cluster.stop_cluster()
        return ids, pids

    ids, pids = asyncio.run(run())
    assert len(ids) == 1
    assert not any(alive(p) for p in pids)


@pytest.mark.parametrize("n", [0, -3])
def test_a_cluster_needs_an_engine(n):
    with pytest.raises(ValueError, match="at least 1 engine"):
        hl.Cluster(n=n)
