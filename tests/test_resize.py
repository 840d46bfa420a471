"""Growing and shrinking a running local cluster: ``hpclaunch engines add|stop`` and the
``hl.Cluster`` methods behind them, against real controller and engine processes."""

import json
import os
import re
import threading
import time

import psutil
import pytest

import hpclaunch as hl
from batch_helpers import hpclaunch
from conftest import alive, processes_under, wait_until
from hpclaunch.engine.registration import batch_job_id
from hpclaunch.launch import JobRecord, LaunchError, state_file
from hpclaunch.protocol import paths
from hpclaunch.resize import job_of

FAST = ["--hb-period", "0.5", "--hb-liveness", "4"]


def recorded_engines(pdir):
    with open(state_file(pdir)) as f:
        state = json.load(f)
    return [e["pid"] for e in state["engines"]], state["n"]


def status_rows(name):
    status = hpclaunch("status", "--profile", name)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("ENGINE"))
    return status.stdout, [line.split() for line in lines[header + 1:]]


def test_add_then_stop_two_engines_through_the_cli():
    name = "grow"
    pdir = paths.profile_dir(name)
    started = hpclaunch("start", "-n", "2", "--profile", name, "--daemonize", *FAST)
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        added = hpclaunch("engines", "add", "-n", "2", "--profile", name)
        assert added.returncode == 0, added.stdout + added.stderr
        assert "(1/2)" in added.stdout and "(2/2)" in added.stdout
        assert "added engines 2, 3 to the cluster of profile 'grow'; it now has 4 engines" \
            in added.stdout
        pids, n = recorded_engines(pdir)
        assert len(pids) == 4 and n == 4 and all(alive(p) for p in pids)

        rc = hl.Client(profile=name, timeout=10)
        try:
            assert rc.ids == [0, 1, 2, 3]
            assert sorted(rc[:].apply_sync(os.getpid)) == sorted(pids)
            assert rc[:].map_sync(lambda x: x * x, range(16)) == [x * x for x in range(16)]
            victims = {eid: rc.engines[eid]["pid"] for eid in (1, 2)}

            stopped = hpclaunch("engines", "stop", "1", "2", "--profile", name)
            assert stopped.returncode == 0, stopped.stdout + stopped.stderr
            for eid, pid in victims.items():
                assert f"stopped engine {eid} (pid {pid} on " in stopped.stdout
            assert "has 2 engines left; its controller keeps running" in stopped.stdout
            assert wait_until(lambda: rc.ids == [0, 3])
            assert not any(alive(p) for p in victims.values())
            assert rc[:].map_sync(lambda x: x + 1, range(6)) == list(range(1, 7))
        finally:
            rc.close()

        pids, n = recorded_engines(pdir)
        assert n == 2 and sorted(pids) == sorted(set(pids) - set(victims.values()))
        text, rows = status_rows(name)
        assert "engines: 2 registered of 2 launched" in text
        assert [row[0] for row in rows] == ["0", "3"]
        assert sorted(int(row[2]) for row in rows) == sorted(pids)
    finally:
        done = hpclaunch("stop", "--profile", name)
    assert done.returncode == 0, done.stderr
    assert "and 2 engines" in done.stdout
    assert wait_until(lambda: processes_under(pdir) == [])
    assert not os.path.exists(state_file(pdir))


def test_unknown_ids_name_the_registered_ones(start_cluster):
    cluster, rc = start_cluster(n=2, profile="grow-bad-ids")
    result = hpclaunch("engines", "stop", "0", "5", "9", "--profile", "grow-bad-ids")
    assert result.returncode == 1
    assert ("no engine 5, 9 in the cluster of profile 'grow-bad-ids'; its registered engines "
            "are: 0, 1") in result.stderr
    assert all(alive(p) for p in cluster.engine_pids), "a bad request stops nothing"
    word = hpclaunch("engines", "stop", "one", "--profile", "grow-bad-ids")
    assert word.returncode == 2 and "'one' is not a valid integer" in word.stderr
    with pytest.raises(LaunchError, match=r"no engine 7 .* are: 0, 1"):
        cluster.stop_engine_sync(7)
    with pytest.raises(LaunchError, match=r"engine ids are whole numbers, not \['x'\]"):
        cluster.stop_engines_sync(["x"])
    with pytest.raises(LaunchError, match="name at least one engine id"):
        cluster.stop_engines_sync([])
    assert rc.ids == [0, 1] and all(alive(p) for p in cluster.engine_pids)


@pytest.mark.parametrize("command", [["add", "-n", "1"], ["stop", "0"]])
def test_engines_commands_without_a_running_cluster_say_so(command):
    result = hpclaunch("engines", *command, "--profile", "grow-nothing")
    assert result.returncode == 1
    assert ("no cluster is running for profile 'grow-nothing'; start one with: "
            "hpclaunch start --profile grow-nothing -n N") in result.stderr
    assert not os.path.exists(state_file(paths.profile_dir("grow-nothing")))


def test_add_needs_at_least_one_engine():
    result = hpclaunch("engines", "add", "-n", "0", "--profile", "grow-nothing")
    assert result.returncode == 2 and "0 is not in the range x>=1" in result.stderr


def test_python_api_adds_and_stops_engines(start_cluster):
    cluster, rc = start_cluster(n=2)
    new = cluster.add_engines_sync(2, rc=rc)
    assert new == [2, 3] and rc.ids == [0, 1, 2, 3]
    assert cluster.engines_launched == 4 and len(cluster.engine_pids) == 4
    victim = rc.engines[0]["pid"]
    report = cluster.stop_engine_sync(0, rc=rc)
    assert [e["id"] for e in report.engines] == [0] and report.engines[0]["pid"] == victim
    assert report.remaining == 3 and report.signalled == [] and report.ended_jobs == []
    assert not alive(victim) and victim not in cluster.engine_pids
    assert sorted(rc[:].apply_sync(os.getpid)) == sorted(cluster.engine_pids)


def test_stopping_every_engine_keeps_the_controller_and_a_reattached_cluster_grows_alike(
        start_cluster):
    cluster, rc = start_cluster(n=2, profile="grow-empty", engine_args=["--timeout", "17"])
    cluster.stop_engines_sync([0, 1], rc=rc)
    assert rc.ids == [] and cluster.running and cluster.engine_pids == []
    again = hl.Cluster.from_file(profile="grow-empty")
    assert again.add_engines_sync(1) == [2]
    assert wait_until(lambda: rc.ids == [2])
    argv = psutil.Process(again.engine_pids[0]).cmdline()
    assert argv[argv.index("--timeout") + 1] == "17", "added engines start like the first ones"
    logs = paths.logs_dir(paths.profile_dir("grow-empty"))
    with open(os.path.join(logs, "engine-0.log")) as f:
        assert "shutdown requested" in f.read(), "a stopped engine's log is kept"
    assert os.path.exists(os.path.join(logs, "engine-2.log"))


def test_a_busy_local_engine_gets_sigterm_after_the_timeout(start_cluster):
    cluster, rc = start_cluster(n=2)
    pid = rc.engines[1]["pid"]
    busy = rc[1].apply_async(time.sleep, 60)
    time.sleep(0.3)
    began = time.monotonic()
    report = cluster.stop_engines_sync([1], rc=rc, timeout=1.0)
    assert time.monotonic() - began < 15
    assert report.signalled == [1] and rc.ids == [0]
    assert wait_until(lambda: not alive(pid))
    with pytest.raises(Exception):
        busy.get(timeout=10)


def test_a_failed_add_is_undone(start_cluster):
    cluster, rc = start_cluster(n=1, profile="grow-undo")
    pdir = paths.profile_dir("grow-undo")
    before = list(cluster.engine_pids)
    result = hpclaunch("engines", "add", "-n", "2", "--profile", "grow-undo", "--timeout", "0.01")
    assert result.returncode == 1
    assert re.search(r"adding 2 engines failed; the cluster is as it was\. only [01] of 2 "
                     r"engines registered", result.stderr), result.stderr
    pids, n = recorded_engines(pdir)
    assert pids == before and n == 1
    assert wait_until(lambda: rc.ids == [0])
    assert len(processes_under(pdir)) == 2, "the controller and the first engine only"


def test_a_failed_add_waits_until_its_engines_left_the_client():
    """Engines the undone add registered leave rc.ids as they unregister; the add waits
    (bounded) so the caller sees the cluster as it was, and names any that stay."""
    from hpclaunch.resize import _wait_until_gone

    class Listed:  # what the wait reads of a Client
        ids = [0, 1, 2]

    rc = Listed()
    threading.Timer(0.2, setattr, (rc, "ids", [0, 1])).start()
    assert _wait_until_gone(rc, frozenset({0, 1}), timeout=5) == []
    rc.ids = [0, 1, 5]
    began = time.monotonic()
    assert _wait_until_gone(rc, frozenset({0, 1}), timeout=0.2) == [5]
    assert time.monotonic() - began < 2


def test_state_changes_from_two_shells_do_not_undo_each_other(start_cluster):
    cluster, rc = start_cluster(n=1, profile="grow-two-shells")
    other = hl.Cluster.from_file(profile="grow-two-shells")
    other.add_engines_sync(1)
    cluster.add_engines_sync(1, rc=rc)  # its copy of the state predates the other's add
    pids, n = recorded_engines(paths.profile_dir("grow-two-shells"))
    assert n == 3 and sorted(pids) == sorted(rc[:].apply_sync(os.getpid))


def test_engines_report_their_batch_job_and_the_launcher_matches_it():
    assert batch_job_id({"SLURM_JOB_ID": "41", "SLURM_ARRAY_JOB_ID": "40"}) == "40"
    assert batch_job_id({"PBS_JOBID": "12[3].pbs01"}) == "12[3].pbs01"
    assert batch_job_id({"JOB_ID": "7", "SGE_TASK_ID": "undefined"}) == "7"
    assert batch_job_id({"JOB_ID": "7"}) is None, "JOB_ID alone is too common a name"
    assert batch_job_id({}) is None
    jobs = [JobRecord(j, "pbs", "s", "o", 2) for j in ("12[].pbs01", "13.pbs01")]
    assert job_of({"batch_job": "12[3].pbs01"}, jobs) == "12[].pbs01"
    assert job_of({"batch_job": "13.pbs01"}, jobs) == "13.pbs01"
    assert job_of({"batch_job": "99"}, jobs) is None
    assert job_of({}, jobs) is None and job_of({}, jobs[:1]) == "12[].pbs01"


def test_status_and_stop_from_another_shell_see_engines_being_added():
    import subprocess
    import sys

    name = "grow-other-shell"
    pdir = paths.profile_dir(name)
    started = hpclaunch("start", "-n", "1", "--profile", name, "--daemonize", *FAST)
    assert started.returncode == 0, started.stdout + started.stderr
    adding = subprocess.Popen(
        [sys.executable, "-m", "hpclaunch", "engines", "add", "-n", "3", "--profile", name,
         "--timeout", "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        stdin=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: recorded_engines(pdir)[1] == 4, 30), "add records engines"
        text, rows = status_rows(name)
        assert "of 4 launched" in text and len(rows) == 4
        stopped = hpclaunch("stop", "--profile", name)
        assert stopped.returncode == 0, stopped.stderr
        assert "and 4 engines" in stopped.stdout
        out, err = adding.communicate(timeout=60)
    finally:
        if adding.poll() is None:
            adding.kill()
            adding.wait()
    assert adding.returncode in (0, 1), out + err
    if adding.returncode == 1:  # stop came before the three registered
        assert "adding 3 engines failed; the cluster was stopped meanwhile" in err, err
    assert wait_until(lambda: processes_under(pdir) == [])
    assert not os.path.exists(state_file(pdir)), "a stopped cluster's state never reappears"


def test_engines_help_lists_add_and_stop():
    result = hpclaunch("engines", "--help")
    assert result.returncode == 0
    assert re.search(r"^\s+add\s+Start K more engines", result.stdout, re.M)
    assert re.search(r"^\s+stop\s+Stop engines by id", result.stdout, re.M)
    assert re.search(r"^\s+engines\s+Add engines", hpclaunch("--help").stdout, re.M)


def test_engines_added_from_another_shell_get_the_clusters_extra_environment(start_cluster):
    cluster, rc = start_cluster(n=1, profile="grow-env", env={"HPCLAUNCH_TEST_MARK": "kept"})
    added = hpclaunch("engines", "add", "-n", "1", "--profile", "grow-env")
    assert added.returncode == 0, added.stdout + added.stderr
    rc.wait_for_engines(2, timeout=30)
    marks = rc[:].apply_sync(lambda: __import__("os").environ.get("HPCLAUNCH_TEST_MARK"))
    assert marks == ["kept", "kept"]
