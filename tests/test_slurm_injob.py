"""Batch-script mode and controller-in-job on the real Slurm the project starts (see test_slurm).

Batch-script mode: the test submits a user's own sbatch script whose one hpclaunch command
starts the controller and the engines, runs the driver and exits with its status.
Controller-in-job: ``start --controller-in-job`` on the login side submits the job that does
the same, and a client on the login side runs a map through it.
"""

import os
import subprocess
import sys
import time

import pytest

import batch_helpers
from batch_helpers import hpclaunch, job_ids, squeue_active
from conftest import processes_under
from hpclaunch.launch import state_file
from test_slurm import assert_nothing_left, run_map, slurm  # noqa: F401 - slurm is a fixture

pytestmark = pytest.mark.slurm

DRIVER = """\
import sys
import hpclaunch as hl

rc = hl.Client(profile={profile!r}, timeout=30)
squares = rc[:].map_sync(lambda x: x * x, range(40))
steps = set(rc[:].apply_sync(lambda: __import__("os").environ.get("SLURM_STEP_ID")))
drain = {{rc.engines[e].get("drain_at") and int(rc.engines[e]["drain_at"]) for e in rc.ids}}
ok = squares == [x * x for x in range(40)]
print(f"driver: {{len(rc.ids)}} engines, map of 40 {{'correct' if ok else 'WRONG'}}, "
      f"sum {{sum(squares)}}, engine steps {{sorted(steps)}}, drain at {{sorted(drain)}}")
rc.close()
sys.exit({status})
"""

USER_SCRIPT = """\
#!/bin/bash
#SBATCH --job-name=user-batch
#SBATCH --ntasks={ntasks}
#SBATCH --time=00:10:00
#SBATCH --output={output}
{body}"""
#: The documented one-command form: start, run the driver, stop, exit with its status
#: (engines drain at HPCLAUNCH_DRAIN_AT when the script sets it).
RUN_DRIVER = """\
export HPCLAUNCH_DRAIN_AT=1999999999
{python} -m hpclaunch start --in-job --profile {profile} -- {python} {driver}
echo "hpclaunch exited with status $?"
"""
#: The cluster left up (--daemonize) for several steps, then stopped by hand.
DAEMONIZED = """\
{python} -m hpclaunch start --in-job --profile {profile} --daemonize
{python} -m hpclaunch status --profile {profile}
{python} {driver}
{python} -m hpclaunch stop --profile {profile}
echo "stop exited with status $?"
"""


def make_profile(name, **fields):
    return batch_helpers.make_profile(name, "slurm", **fields)


def wait_until_finished(job_id, timeout=180):
    deadline = time.monotonic() + timeout
    while squeue_active([job_id]) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert squeue_active([job_id]) == [], f"job {job_id} still in the queue after {timeout} s"
    state = subprocess.run(["squeue", "--noheader", "--states=all", f"--jobs={job_id}",
                            "--format=%T"], capture_output=True, text=True).stdout.strip()
    return state


def submit_user_script(tmp_path, name, ntasks, status, body=RUN_DRIVER):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(profile=name, status=status))
    output = tmp_path / "job-%j.out"
    script = tmp_path / "user-job.sh"
    body = body.format(python=sys.executable, profile=name, driver=driver)
    script.write_text(USER_SCRIPT.format(ntasks=ntasks, output=output, body=body))
    submitted = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True,
                               text=True, check=True)
    job_id = submitted.stdout.strip().split(";")[0]
    return job_id, str(output).replace("%j", job_id)


def test_user_batch_script_runs_its_driver_on_the_jobs_engines(slurm, tmp_path):  # noqa: F811
    name = "slurm-batchscript"
    pdir = make_profile(name)
    began = time.monotonic()
    job_id, output = submit_user_script(tmp_path, name, ntasks=4, status=0)
    state = wait_until_finished(job_id)
    elapsed = time.monotonic() - began
    with open(output) as f:
        out = f.read()
    print(f"\nbatch-script mode: sbatch -> driver done -> job ended in {elapsed:.1f} s\n{out}")
    assert f"inside slurm job {job_id}, engines by srun" in out
    assert "(4/4)" in out and "cluster of 4 engines is up" in out
    assert "driver: 4 engines, map of 40 correct, sum 20540, engine steps ['0'], " \
           "drain at [1999999999]" in out
    assert "hpclaunch exited with status 0" in out
    assert state == "COMPLETED", out
    assert not os.path.exists(state_file(pdir)), "the cluster state was left behind"
    assert_nothing_left(pdir, [job_id])


def test_user_batch_script_exits_with_the_drivers_status(slurm, tmp_path):  # noqa: F811
    name = "slurm-batchscript-fails"
    pdir = make_profile(name)
    job_id, output = submit_user_script(tmp_path, name, ntasks=2, status=3)
    wait_until_finished(job_id)
    with open(output) as f:
        out = f.read()
    assert "driver: 2 engines, map of 40 correct" in out
    assert "exited with status 3; stopping the cluster" in out
    assert "hpclaunch exited with status 3" in out, out
    assert_nothing_left(pdir, [job_id])


def test_user_batch_script_with_a_daemonized_cluster_status_and_stop(slurm, tmp_path):  # noqa: F811
    name = "slurm-batchscript-daemon"
    pdir = make_profile(name)
    job_id, output = submit_user_script(tmp_path, name, ntasks=3, status=0, body=DAEMONIZED)
    wait_until_finished(job_id)
    with open(output) as f:
        out = f.read()
    assert "running in the background; stop it with: hpclaunch stop" in out
    assert "engines: 3 registered of 3 launched" in out
    assert "driver: 3 engines, map of 40 correct" in out
    assert f"stopped the cluster of profile '{name}': controller pid" in out
    assert "and 3 engines\n" in out and "stop exited with status 0" in out
    assert_nothing_left(pdir, [job_id])


def test_controller_in_job_map_status_stop(slurm):  # noqa: F811
    name = "slurm-cij"
    pdir = make_profile(name, controller_ip="0.0.0.0")
    began = time.monotonic()
    started = hpclaunch("start", "--profile", name, "-n", "4", "--controller-in-job",
                        "--daemonize")
    elapsed = time.monotonic() - began
    assert started.returncode == 0, started.stdout + started.stderr
    out = started.stdout
    ids = job_ids(pdir)
    print(f"\ncontroller-in-job: start -> 4 engines registered in {elapsed:.1f} s\n{out}")
    try:
        assert len(ids) == 1
        lines = out.splitlines()
        assert lines[0].startswith(f"submitted slurm job {ids[0]} (4 engines; script "
                                   f"{pdir}/jobs/controller.sh)")
        up = next(i for i, line in enumerate(lines) if line.startswith("controller pid"))
        assert f"(profile '{name}'; inside slurm job {ids[0]})" in lines[up]
        assert f"job {ids[0]}: running" in lines[:up], "running is shown before controller up"
        assert any("(4/4)" in line for line in lines[up:])
        in_jobs = run_map(name, 4)
        assert in_jobs == {ids[0]}, "the engines run inside the controller's job"
        assert_drain_before_walltime(name, began)
        status = hpclaunch("status", "--profile", name)
        assert status.returncode == 0, status.stderr
        assert f"slurm job {ids[0]}: RUNNING (4 engines)" in status.stdout
        assert "4 registered of 4 launched" in status.stdout
    finally:
        stopped = hpclaunch("stop", "--profile", name)
    assert stopped.returncode == 0, stopped.stderr
    assert f"4 engines in slurm job {ids[0]} (none left in the queue)" in stopped.stdout
    assert_nothing_left(pdir, ids)
    assert not os.path.exists(state_file(pdir))
    with open(os.path.join(pdir, "logs", f"controller-{ids[0]}.out")) as f:
        job_out = f.read()
    assert "the controller was shut down" in job_out, "the job stopped by itself, not killed"


def assert_drain_before_walltime(name, began):
    """The engines drain a tenth of the one-hour walltime before it ends (the job script's
    HPCLAUNCH_DRAIN_AT, as for engines in hpclaunch's other jobs)."""
    import hpclaunch as hl

    rc = hl.Client(profile=name, timeout=30)
    try:
        drain = {rc.engines[e].get("drain_at") for e in rc.ids}
    finally:
        rc.close()
    assert len(drain) == 1 and None not in drain, drain
    expected = time.time() - (time.monotonic() - began) + 3600 - 360
    assert abs(drain.pop() - expected) < 30


def test_controller_job_dying_first_fails_start_with_its_state_and_output(slurm):  # noqa: F811
    name = "slurm-cij-broken"
    pdir = make_profile(name, controller_in_job=True,
                        env_setup=["echo 'module python/9.9 not found' >&2", "exit 3"])
    result = hpclaunch("start", "--profile", name, "-n", "2", "--daemonize", "--timeout", "60")
    assert result.returncode == 1
    assert "ended (FAILED) before its controller came up" in result.stderr
    assert "module python/9.9 not found" in result.stderr
    assert not os.path.exists(state_file(pdir))
    assert processes_under(pdir) == []



def test_engines_added_to_a_controller_in_job_cluster_come_as_jobs(slurm):  # noqa: F811
    name = "slurm-cij-grow"
    pdir = make_profile(name, controller_in_job=True)
    started = hpclaunch("start", "--profile", name, "-n", "2", "--daemonize")
    assert started.returncode == 0, started.stdout + started.stderr
    ids = job_ids(pdir)
    try:
        added = hpclaunch("engines", "add", "-n", "2", "--profile", name)
        assert added.returncode == 0, added.stdout + added.stderr
        assert "it now has 4 engines" in added.stdout
        ids = job_ids(pdir)
        assert len(ids) == 2, "the controller's job and one job of added engines"
        in_jobs = run_map(name, 4)
        assert in_jobs == set(ids)
    finally:
        stopped = hpclaunch("stop", "--profile", name)
    assert stopped.returncode == 0, stopped.stderr
    assert f"4 engines in slurm jobs {', '.join(ids)} (none left in the queue)" in stopped.stdout
    assert_nothing_left(pdir, ids)
