"""hpclaunch on a real Grid Engine (sge_qmaster + sge_execd on this machine, set up by the project).

The session fixture runs scripts/sge-setup.sh (apt-get gridengine-*, a one-host cell with queue
all.q and parallel environments smp/mpi), so these tests need root and apt; they skip with the
reason otherwise. Run only them with ``-m sge``; leave them out with ``-m "not sge"``.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
import time

import pytest

import batch_helpers
from batch_helpers import hpclaunch, job_ids, run_setup_script
from conftest import processes_under
from hpclaunch.launch import JobState, state_file
from hpclaunch.launch.sge import qacct_state, qstat_states, sge_state

pytestmark = pytest.mark.sge



@pytest.fixture(scope="session")
def sge():
    """A running single-host Grid Engine cell, started by the project's own setup script."""
    run_setup_script("sge-setup.sh", what="Grid Engine", installed=shutil.which("qsub") is not None,
                     timeout=400)
    return True


def make_profile(name, **fields):
    return batch_helpers.make_profile(name, "sge", **fields)


def queued(ids):
    """Which of ``ids`` qstat still lists (pending, running or being deleted)."""
    out = subprocess.run(["qstat", "-xml"], capture_output=True, text=True, check=True).stdout
    return sorted(qstat_states(out, ids))


def assert_nothing_left(pdir, ids):
    assert queued(ids) == [], f"jobs {ids} still in qstat after stop"
    deadline = time.monotonic() + 10
    while processes_under(pdir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_under(pdir) == [], "engine or controller processes survived stop"


def test_array_of_8_engines_start_map_stop(sge):
    name = "sge-array"
    pdir = make_profile(name, job_shape="array")
    began = time.monotonic()
    started = hpclaunch("start", "--profile", name, "-n", "8", "--daemonize")
    elapsed = time.monotonic() - began
    assert started.returncode == 0, started.stdout + started.stderr
    assert "submitted sge job" in started.stdout and "array of 8 tasks" in started.stdout
    assert "cluster of 8 engines is up" in started.stdout and "(8/8)" in started.stdout
    (job_id,) = ids = job_ids(pdir)
    print(f"\nsge array: start -> 8 engines registered in {elapsed:.1f} s (job {job_id})")
    try:
        import hpclaunch as hl

        rc = hl.Client(profile=name, timeout=30)
        try:
            assert len(rc.ids) == 8
            assert rc[:].map_sync(lambda x: x * x, range(32)) == [x * x for x in range(32)]
            where = rc[:].apply_sync(lambda: (__import__("os").environ.get("JOB_ID"),
                                              __import__("os").environ.get("SGE_TASK_ID")))
        finally:
            rc.close()
        assert {job for job, _ in where} == {job_id}, "every engine runs in the one array job"
        assert sorted(int(task) for _, task in where) == list(range(1, 9)), \
            "one engine per array task"
        status = hpclaunch("status", "--profile", name)
        assert status.returncode == 0, status.stderr
        assert f"sge job {job_id}: RUNNING (8 engines)" in status.stdout
    finally:
        stopped = hpclaunch("stop", "--profile", name)
    assert stopped.returncode == 0, stopped.stderr
    assert f"in sge job {job_id}" in stopped.stdout
    assert_nothing_left(pdir, ids)


@pytest.fixture(scope="module")
def mpich_bin():
    """bin/ of a venv holding the MPICH wheel's mpiexec (hydra), for the one-job -pe shape."""
    venv = "/tmp/hpclaunch-sge-mpich"
    mpiexec = os.path.join(venv, "bin", "mpiexec")
    if not os.path.exists(mpiexec):
        made = subprocess.run(f"{shlex.quote(sys.executable)} -m venv --clear {venv} && "
                              f"{venv}/bin/pip install -q mpich", shell=True,
                              capture_output=True, text=True, timeout=300)
        if made.returncode != 0 or not os.path.exists(mpiexec):
            pytest.skip(f"cannot pip install the mpich wheel for mpiexec: {made.stderr[-500:]}")
    return os.path.dirname(mpiexec)


def test_one_job_of_8_engines_in_a_parallel_environment(sge, mpich_bin):
    name = "sge-pe"
    pdir = make_profile(name, job_shape="one-job", parallel_environment="smp",
                        env_setup=[f"export PATH={mpich_bin}:$PATH"])
    began = time.monotonic()
    started = hpclaunch("start", "--profile", name, "-n", "8", "--daemonize")
    elapsed = time.monotonic() - began
    assert started.returncode == 0, started.stdout + started.stderr
    assert "cluster of 8 engines is up" in started.stdout
    (job_id,) = ids = job_ids(pdir)
    with open(os.path.join(pdir, "jobs", "engines-1.sh")) as f:
        assert "#$ -pe smp 8\n" in f.read()
    print(f"\nsge one-job -pe smp 8 (mpiexec): start -> 8 engines registered in {elapsed:.1f} s "
          f"(job {job_id})")
    try:
        import hpclaunch as hl

        rc = hl.Client(profile=name, timeout=30)
        try:
            assert rc[:].map_sync(lambda x: x + 1, range(16)) == list(range(1, 17))
            where = set(rc[:].apply_sync(lambda: (__import__("os").environ.get("JOB_ID"),
                                                  __import__("os").environ.get("NSLOTS"))))
        finally:
            rc.close()
        assert where == {(job_id, "8")}, "all 8 engines share one job holding 8 slots"
    finally:
        stopped = hpclaunch("stop", "--profile", name)
    assert stopped.returncode == 0, stopped.stderr
    assert_nothing_left(pdir, ids)


def test_job_dying_before_registration_quotes_its_output(sge):
    name = "sge-broken"
    pdir = make_profile(name, job_shape="array",
                        env_setup=["echo 'module python/9.9 not found' >&2", "exit 3"])
    result = hpclaunch("start", "--profile", name, "-n", "2", "--daemonize", "--timeout", "60")
    assert result.returncode == 1
    assert "only 0 of 2 engines registered" in result.stderr
    assert "module python/9.9 not found" in result.stderr
    assert not os.path.exists(state_file(pdir))
    assert processes_under(pdir) == []
    job_id = re.search(r"sge job (\d+)", result.stderr).group(1)
    from hpclaunch.launch.scheduler import scheduler

    deadline = time.monotonic() + 30  # qacct learns of it within the accounting flush time
    while scheduler("sge").poll([job_id])[job_id] is not JobState.FAILED:
        assert time.monotonic() < deadline, f"qacct never reported job {job_id} as failed"
        time.sleep(1)


def test_rejected_submission_quotes_qsub(sge):
    name = "sge-rejected"
    pdir = make_profile(name, queue="no-such-queue")
    result = hpclaunch("start", "--profile", name, "-n", "2", "--daemonize")
    assert result.returncode == 1
    assert "sge rejected `qsub -terse" in result.stderr
    assert 'unknown queue "no-such-queue"' in result.stderr
    assert processes_under(pdir) == []



# -- the words Grid Engine uses (as SGE 8.1.9 printed them) ------------------------
QSTAT_XML = """<?xml version='1.0'?>
<job_info xmlns:xsd="http://arc.liv.ac.uk/repos/darcs/sge/source/dist/util/resources/schemas/qstat/qstat.xsd">
  <queue_info>
    <job_list state="running"><JB_job_number>7</JB_job_number><state>r</state><tasks>1</tasks></job_list>
    <job_list state="running"><JB_job_number>9</JB_job_number><state>dr</state><tasks>2</tasks></job_list>
  </queue_info>
  <job_info>
    <job_list state="pending"><JB_job_number>7</JB_job_number><state>qw</state><tasks>2-8:1</tasks></job_list>
    <job_list state="pending"><JB_job_number>8</JB_job_number><state>Eqw</state></job_list>
    <job_list state="pending"><JB_job_number>10</JB_job_number><state>hqw</state></job_list>
  </job_info>
</job_info>
"""

QACCT = """==============================================================
qname        all.q
jobnumber    4
taskid       1
failed       0
exit_status  0
==============================================================
qname        all.q
jobnumber    4
taskid       2
failed       100 : assumedly after job
exit_status  137                  (Killed)
"""


def test_qstat_states_group_array_tasks_by_job():
    found = qstat_states(QSTAT_XML, ["7", "8", "9", "11"])
    assert found == {"7": [JobState.RUNNING, JobState.PENDING], "8": [JobState.PENDING],
                     "9": [JobState.RUNNING]}
    assert sge_state("Rr") is JobState.RUNNING and sge_state("s") is JobState.PENDING


def test_qacct_records_map_to_one_state():
    assert qacct_state(QACCT) is JobState.CANCELLED
    assert qacct_state(QACCT.replace("exit_status  137", "exit_status  3")) is JobState.FAILED
    first_task_only = QACCT[:QACCT.index("\n=", 1)]
    assert qacct_state(first_task_only) is JobState.DONE
    assert qacct_state("error: job id 4 not found\n") is None
