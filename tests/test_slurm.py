"""hpclaunch on a real Slurm (slurmctld + slurmd on this machine, installed by the project).

The session fixture runs scripts/slurm-setup.sh (apt-get slurm-wlm + munge, a one-node
cluster that advertises 64 CPUs), so these tests need root and apt; they skip with the
reason otherwise. Run only them with ``-m slurm``; leave them out with ``-m "not slurm"``.
"""

import os
import shutil
import sys
import time

import pytest

from conftest import processes_under
from hpclaunch.launch import state_file

import batch_helpers
from batch_helpers import hpclaunch, job_ids, run_setup_script, squeue_active

pytestmark = pytest.mark.slurm



@pytest.fixture(scope="session")
def slurm():
    """A running single-node Slurm, started by the project's own setup script."""
    run_setup_script("slurm-setup.sh", what="Slurm", installed=shutil.which("sbatch") is not None)
    return True


def make_profile(name, **fields):
    return batch_helpers.make_profile(name, "slurm", **fields)


def assert_nothing_left(pdir, ids):
    assert squeue_active(ids) == [], f"jobs {ids} still in squeue after stop"
    deadline = time.monotonic() + 10
    while processes_under(pdir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_under(pdir) == [], "engine or controller processes survived stop"


def run_map(name, n):
    import hpclaunch as hl

    rc = hl.Client(profile=name, timeout=30)
    try:
        assert len(rc.ids) == n
        squares = rc[:].map_sync(lambda x: x * x, range(4 * n))
        assert squares == [x * x for x in range(4 * n)]
        jobs = set(rc[:].apply_sync(lambda: __import__("os").environ.get("SLURM_JOB_ID")))
        tunables = rc[:].apply_sync(lambda: __import__("os").environ.get("GLIBC_TUNABLES", ""))
        assert all("glibc.malloc.hugetlb=1" in t.split(":") for t in tunables), \
            "sbatch passes the submitting environment, huge pages included"
        return jobs
    finally:
        rc.close()


@pytest.mark.parametrize("shape", ["one-job", "array", "jobs:2"])
def test_start_map_stop(slurm, shape):
    name = f"slurm-{shape.replace(':', '')}"
    pdir = make_profile(name, job_shape=shape)
    began = time.monotonic()
    started = hpclaunch("start", "--profile", name, "-n", "8", "--daemonize")
    elapsed = time.monotonic() - began
    assert started.returncode == 0, started.stdout + started.stderr
    out = started.stdout
    assert "submitted slurm job" in out and "cluster of 8 engines is up" in out
    assert "job " in out and "running" in out and "(8/8)" in out
    ids = job_ids(pdir)
    assert len(ids) == (2 if shape == "jobs:2" else 1)
    print(f"\nslurm {shape}: start -> 8 engines registered in {elapsed:.1f} s (jobs {ids})")
    try:
        in_jobs = run_map(name, 8)
        if shape == "one-job":
            assert in_jobs == {ids[0]}, "every engine runs inside the one job (srun fan-out)"
        elif shape == "array":
            assert len(in_jobs) == 8, "each array task is its own Slurm job with one engine"
        else:
            assert in_jobs == set(ids), "four engines in each of the two jobs"
        status = hpclaunch("status", "--profile", name)
        assert status.returncode == 0, status.stderr
        for job_id in ids:
            assert f"slurm job {job_id}: RUNNING ({8 // len(ids)} engines)" in status.stdout
        assert "JOB STATE" in status.stdout
    finally:
        stopped = hpclaunch("stop", "--profile", name)
    assert stopped.returncode == 0, stopped.stderr
    assert f"in slurm job{'s' if len(ids) > 1 else ''} {', '.join(ids)}" in stopped.stdout
    assert_nothing_left(pdir, ids)


def test_job_dying_before_registration_quotes_its_output(slurm):
    name = "slurm-broken"
    pdir = make_profile(name, env_setup=["echo 'module python/9.9 not found' >&2", "exit 3"])
    result = hpclaunch("start", "--profile", name, "-n", "2", "--daemonize", "--timeout", "60")
    assert result.returncode == 1
    assert "only 0 of 2 engines registered" in result.stderr
    assert "FAILED" in result.stderr and "module python/9.9 not found" in result.stderr
    assert not os.path.exists(state_file(pdir))
    assert processes_under(pdir) == []


def test_rejected_submission_quotes_sbatch(slurm):
    name = "slurm-rejected"
    pdir = make_profile(name, queue="no-such-partition")
    result = hpclaunch("start", "--profile", name, "-n", "2", "--daemonize")
    assert result.returncode == 1
    assert "slurm rejected `sbatch --parsable" in result.stderr
    assert "invalid partition" in result.stderr.lower()
    assert processes_under(pdir) == []



def start_daemonized(name, n, **fields):
    """``hpclaunch start --daemonize`` on a fresh Slurm profile; (profile dir, job ids)."""
    pdir = make_profile(name, **fields)
    started = hpclaunch("start", "--profile", name, "-n", str(n), "--daemonize")
    assert started.returncode == 0, started.stdout + started.stderr
    return pdir, job_ids(pdir)


def stop_leaves_nothing(name, pdir, ids):
    stopped = hpclaunch("stop", "--profile", name)
    assert stopped.returncode == 0, stopped.stderr
    assert_nothing_left(pdir, ids)


def test_add_a_job_then_stop_the_first_jobs_engines(slurm):
    name = "slurm-grow"
    pdir, first = start_daemonized(name, 2)
    ids = list(first)
    try:
        added = hpclaunch("engines", "add", "-n", "2", "--profile", name)
        assert added.returncode == 0, added.stdout + added.stderr
        ids = job_ids(pdir)
        assert len(ids) == 2 and ids[0] == first[0]
        second = ids[1]
        out = added.stdout
        assert f"submitted slurm job {second} (2 engines" in out and "engines-2.sh" in out
        assert f"job {second}: running" in out and "(2/2)" in out
        assert "added engines 2, 3" in out and "it now has 4 engines" in out
        assert squeue_active(ids) == sorted(ids)

        import hpclaunch as hl

        rc = hl.Client(profile=name, timeout=30)
        try:
            in_jobs = dict(zip(rc.ids, rc[:].apply_sync(
                lambda: __import__("os").environ.get("SLURM_JOB_ID"))))
            assert in_jobs == {0: first[0], 1: first[0], 2: second, 3: second}
            status = hpclaunch("status", "--profile", name)
            assert f"slurm job {second}: RUNNING (2 engines)" in status.stdout
            stopped = hpclaunch("engines", "stop", "0", "1", "--profile", name)
            assert stopped.returncode == 0, stopped.stdout + stopped.stderr
            assert "stopped engine 0 (pid " in stopped.stdout
            assert f", slurm job {first[0]})" in stopped.stdout
            assert f"job {first[0]} ended: all its engines stopped; it left the queue" \
                in stopped.stdout
            assert squeue_active(ids) == [second]
            assert job_ids(pdir) == [second]
            assert rc.ids == [2, 3]
            assert rc[:].map_sync(lambda x: x * x, range(8)) == [x * x for x in range(8)]
        finally:
            rc.close()
        status = hpclaunch("status", "--profile", name)
        assert "engines: 2 registered of 2 launched" in status.stdout
        assert f"job {first[0]}:" not in status.stdout, "the first job is gone"
        rows = status.stdout.splitlines()[-2:]
        assert [row.split()[-2] for row in rows] == [second, second], status.stdout
    finally:
        stop_leaves_nothing(name, pdir, ids)


def test_add_whose_job_dies_or_is_rejected_leaves_the_cluster_as_it_was(slurm):
    name = "slurm-grow-fails"
    pdir, first = start_daemonized(name, 1)
    tried = list(first)
    try:
        make_profile(name, env_setup=["echo 'module python/9.9 not found' >&2", "exit 3"])
        died = hpclaunch("engines", "add", "-n", "2", "--profile", name, "--timeout", "60")
        assert died.returncode == 1, died.stdout
        assert "submitted slurm job" in died.stdout
        tried += [w for w in died.stdout.split() if w.isdigit() and w not in first]
        assert "adding 2 engines failed; the cluster is as it was" in died.stderr
        assert "only 0 of 2 engines registered" in died.stderr and "FAILED" in died.stderr
        assert "module python/9.9 not found" in died.stderr
        assert job_ids(pdir) == first

        make_profile(name, queue="no-such-partition")
        rejected = hpclaunch("engines", "add", "-n", "1", "--profile", name)
        assert rejected.returncode == 1
        assert "slurm rejected `sbatch --parsable" in rejected.stderr
        assert "invalid partition" in rejected.stderr.lower()
        assert job_ids(pdir) == first
        status = hpclaunch("status", "--profile", name)
        assert "engines: 1 registered of 1 launched" in status.stdout
    finally:
        stop_leaves_nothing(name, pdir, tried)


def test_status_and_stop_in_another_shell_see_a_job_that_add_waits_for(slurm):
    import subprocess

    name = "slurm-grow-other-shell"
    pdir, first = start_daemonized(name, 1)
    ids = list(first)
    make_profile(name, extra_directives=["--begin=now+300"])  # the added job stays pending
    adding = subprocess.Popen(
        [sys.executable, "-m", "hpclaunch", "engines", "add", "-n", "2", "--profile", name,
         "--timeout", "120"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while len(job_ids(pdir)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        ids = job_ids(pdir)
        assert len(ids) == 2, "the added job is in the state file as soon as it is submitted"
        status = hpclaunch("status", "--profile", name)
        assert f"slurm job {ids[1]}: PENDING (2 engines)" in status.stdout
        assert "1 registered of 3 launched" in status.stdout
    finally:
        stopped = hpclaunch("stop", "--profile", name)
        out, err = adding.communicate(timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    assert f"in slurm jobs {', '.join(ids)}" in stopped.stdout
    assert adding.returncode == 1, out
    assert "adding 2 engines failed; the cluster was stopped meanwhile" in err
    assert_nothing_left(pdir, ids)
    assert not os.path.exists(state_file(pdir))


def test_engines_drain_before_the_walltime(slurm, tmp_path):
    """walltime 1 min, drain margin 45 s: the engine drains ~15 s into its job, finishes
    its long task, gives the queued ones back (a local engine started after the drain runs
    them) and exits 0, so the job completes well before its walltime."""
    import subprocess

    import hpclaunch as hl
    from hpclaunch.protocol import paths
    from remote_helpers import sleep_then

    name = "slurm-drain"
    pdir = make_profile(name, walltime="00:01:00", drain_margin=45)
    started = hpclaunch("start", "--profile", name, "-n", "1", "--daemonize")
    assert started.returncode == 0, started.stdout + started.stderr
    (job,) = job_ids(pdir)
    rc = hl.Client(profile=name, timeout=30)
    helper = None
    try:
        (drainer,) = rc.ids
        drain_at = rc.engines[drainer]["drain_at"]
        assert 0 < drain_at - time.time() < 17, "drain time = job start + 60 s - 45 s"
        lv = rc.load_balanced_view()
        long_task = lv.apply_async(sleep_then, drain_at + 3 - time.time(), "long")
        queued = [lv.apply_async(sleep_then, 0.1, i) for i in range(4)]
        time.sleep(max(0.0, drain_at + 1 - time.time()))
        finished = {ar.msg_ids[0]: ar.exception(timeout=0) for ar in [long_task, *queued]
                     if ar.done()}
        assert finished == {}, f"tasks finished before the drain ended: {finished}"
        with open(tmp_path / "helper.log", "w") as log:
            helper = subprocess.Popen([sys.executable, "-m", "hpclaunch.engine", "--file",
                                       paths.engine_file(pdir)], stdout=log, stderr=log,
                                      stdin=subprocess.DEVNULL)
        assert long_task.get(timeout=30) == "long"
        assert [ar.get(timeout=30) for ar in queued] == [0, 1, 2, 3]
        assert long_task.metadata["engine_id"] == drainer
        assert drainer not in {ar.metadata["engine_id"] for ar in queued}
        deadline = time.monotonic() + 20
        while drainer in rc.ids and time.monotonic() < deadline:
            time.sleep(0.1)
        assert drainer not in rc.ids
        deadline = time.monotonic() + 30
        while squeue_active([job]) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert squeue_active([job]) == []
        # no accounting here (see slurm-setup.sh): slurmctld keeps a finished job for minutes
        shown = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True,
                               text=True).stdout
        fields = dict(w.split("=", 1) for w in shown.split() if "=" in w)
        print(f"\nslurm drain: job {job} {fields['JobState']} exit {fields['ExitCode']} after "
              f"{fields['RunTime']} (walltime {fields['TimeLimit']})")
        assert (fields["JobState"], fields["ExitCode"]) == ("COMPLETED", "0:0")
        assert fields["TimeLimit"] == "00:01:00" and fields["RunTime"] < "00:00:50"
        (output,) = [os.path.join(paths.logs_dir(pdir), f) for f in
                     os.listdir(paths.logs_dir(pdir)) if f == f"job-1-{job}.out"]
        text = open(output).read()
        assert "queued tasks go back to the controller" in text
        assert "drained before the batch job's walltime ends" in text
        assert "DUE TO TIME LIMIT" not in text
    finally:
        rc.close()
        if helper is not None:
            helper.terminate()
            helper.wait(timeout=10)
        stopped = hpclaunch("stop", "--profile", name)
    assert stopped.returncode == 0, stopped.stderr
    assert_nothing_left(pdir, [job])
