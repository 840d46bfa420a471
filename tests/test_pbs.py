"""hpclaunch on PBS, both dialects. No PBS server can be installed here, so:

- Torque dialect: really started, mapped and stopped through Debian's slurm-wlm-torque
  qsub/qstat/qdel wrappers (SchedMD's Torque-style CLI) over the real single-node Slurm that
  scripts/pbs-on-slurm-setup.sh installs (needs root and apt; marked ``slurm`` and ``pbs``).
- PBS Pro dialect: its rendering (``#PBS -J 1-N``) and its parsing of ``qstat -x -t -F json``
  are tested against tests/data/pbspro-qstat-x-t-F-json.json, written by hand in the documented
  PBS Pro format (see tests/data/README.md), not captured from a live PBS Pro server.
"""

import json
import os
import re
import time

import pytest

from batch_helpers import ROOT, hpclaunch, job_ids, make_profile, run_setup_script, squeue_active
from conftest import processes_under
from hpclaunch.launch import JobState, Profile, plan_jobs, state_file
from hpclaunch.launch.pbs import (
    PbsScheduler, TorqueScheduler, array_parent, collect, parse_pbspro_json, parse_torque_full,
    pbs_state, short_id)
from hpclaunch.launch.scheduler import scheduler
from hpclaunch.protocol import paths

DATA = os.path.join(ROOT, "tests", "data")
PREFIX = "/tmp/hpclaunch-pbs-on-slurm"
ENGINE = ["python", "-m", "hpclaunch.engine", "--profile-dir", "/p"]

PRO_IDS = ["1201[].pbs01", "1202.pbs01", "1203.pbs01", "1204.pbs01", "1205.pbs01",
           "1206.pbs01", "1299.pbs01"]


def pbspro_json():
    with open(os.path.join(DATA, "pbspro-qstat-x-t-F-json.json")) as f:
        return f.read()


# -- PBS Pro: job ids, JSON status, rendering (recorded format, no server) ----------------
def test_job_id_forms():
    assert re.search(PbsScheduler.job_id_regex, "1201[].pbs01.example.org\n").group(1) \
        == "1201[].pbs01.example.org"
    assert re.search(TorqueScheduler.job_id_regex, "73\n").group(1) == "73"
    assert short_id("1201[].pbs01.example.org") == "1201[]"
    assert short_id("1202.pbs01") == short_id("1202") == "1202"
    assert array_parent("1201[3]") == "1201[]" and array_parent("1202") == "1202"


def test_pbspro_json_states_roll_up_per_job():
    states = collect(parse_pbspro_json(pbspro_json()), PRO_IDS)
    assert states == {
        "1201[].pbs01": JobState.RUNNING,    # subjobs X, R, R, Q: the least finished wins
        "1202.pbs01": JobState.CANCELLED,    # F, Exit_status 271 = 256 + SIGTERM (qdel)
        "1203.pbs01": JobState.FAILED,       # F, Exit_status 3
        "1204.pbs01": JobState.PENDING,      # Q
        "1205.pbs01": JobState.DONE,         # F, Exit_status 0
        "1206.pbs01": JobState.CANCELLED,    # F without an exit status: deleted before it ran
        "1299.pbs01": JobState.DONE,         # gone from the server's history
    }


def test_pbspro_array_state_when_only_the_parent_is_listed():
    data = json.loads(pbspro_json())
    data["Jobs"] = {k: v for k, v in data["Jobs"].items() if k.startswith("1201[]")}
    entries = parse_pbspro_json(json.dumps(data))
    assert collect(entries, ["1201[].pbs01.example.org"]) == {
        "1201[].pbs01.example.org": JobState.RUNNING}


def test_pbs_letters_map_to_one_enum():
    assert pbs_state("Q") is pbs_state("H") is pbs_state("W") is JobState.PENDING
    assert pbs_state("R") is pbs_state("E") is pbs_state("B") is JobState.RUNNING
    assert pbs_state("X", 0) is JobState.DONE
    assert pbs_state("C", "1") is JobState.FAILED
    assert pbs_state("C", "271") is JobState.CANCELLED


def test_pbspro_garbage_is_a_clear_error():
    from hpclaunch.launch import SchedulerError

    with pytest.raises(SchedulerError, match="not PBS Pro's JSON"):
        parse_pbspro_json("qstat: illegal -F value\n")
    assert parse_pbspro_json("") == []


def test_pbspro_poll_is_one_qstat_call_for_all_jobs(tmp_path, monkeypatch):
    """A stand-in qstat on PATH prints the recorded JSON and logs how it was called."""
    calls = tmp_path / "calls"
    fake = tmp_path / "qstat"
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\n"
                    f"cat {os.path.join(DATA, 'pbspro-qstat-x-t-F-json.json')}\n"
                    "echo 'qstat: Unknown Job Id 1299.pbs01' >&2; exit 153\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    states = scheduler("pbs").poll(PRO_IDS)
    assert states["1201[].pbs01"] is JobState.RUNNING and states["1299.pbs01"] is JobState.DONE
    assert calls.read_text().splitlines() == ["-x -t -F json " + " ".join(PRO_IDS)]


def test_a_qstat_that_cannot_answer_is_not_read_as_jobs_ended(tmp_path, monkeypatch):
    from hpclaunch.launch import SchedulerError

    fake = tmp_path / "qstat"
    fake.write_text("#!/bin/sh\necho 'Connection refused' >&2\n"
                    "echo 'qstat: cannot connect to server pbs01 (errno=15010)' >&2; exit 2\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    for system in ("pbs", "torque"):
        with pytest.raises(SchedulerError, match="(?s)could not report job states.*cannot connect"):
            scheduler(system).poll(["1202.pbs01"])


def test_pbspro_renders_a_J_array_and_plain_qsub(tmp_path):
    (job,) = plan_jobs(Profile(system="pbs", job_shape="array", memory_per_engine="2G"), 8,
                       str(tmp_path), ENGINE)
    assert "#PBS -J 1-8\n" in job.text and "#PBS -t" not in job.text
    assert "#PBS -l select=1:ncpus=1:mem=2048mb\n" in job.text
    assert "^array_index^" in job.output
    assert job.submit == f"qsub {tmp_path}/jobs/engines-1.sh"


# -- Torque: qstat -f text, rendering -----------------------------------------------------
TORQUE_QSTAT_F = """\
Job Id: 4107[].torque01.example.org
    Job_Name = hpclaunch
    Job_Owner = alice@login01.example.org
    job_state = R
    queue = batch
    server = torque01.example.org
    job_array_request = 1-4

Job Id: 4108.torque01.example.org
    Job_Name = hpclaunch
    job_state = C
    queue = batch
    exit_status = 271

Job Id: 4109.torque01.example.org
    Job_Name = hpclaunch
    job_state = C
    exit_status = 0
"""

WRAPPER_QSTAT_F = "Job Id:\t73\n\tJob_Name = tq\n\tjob_state = Q\n\tqueue = debug\n\n"


def test_torque_qstat_full_text():
    ids = ["4107[].torque01", "4108.torque01", "4109.torque01", "4110.torque01"]
    assert collect(parse_torque_full(TORQUE_QSTAT_F), ids) == {
        "4107[].torque01": JobState.RUNNING, "4108.torque01": JobState.CANCELLED,
        "4109.torque01": JobState.DONE, "4110.torque01": JobState.DONE}
    assert collect(parse_torque_full(WRAPPER_QSTAT_F), ["73"]) == {"73": JobState.PENDING}


def test_torque_renders_t_arrays_and_nodes_ppn(tmp_path):
    (job,) = plan_jobs(Profile(system="torque", job_shape="array"), 8, str(tmp_path), ENGINE)
    assert "#PBS -t 1-8\n" in job.text and "#PBS -J" not in job.text
    assert "#PBS -l nodes=1:ppn=1\n" in job.text
    (job,) = plan_jobs(Profile(system="torque", engines_per_node=4, fanout="mpiexec"), 8,
                       str(tmp_path), ENGINE)
    assert "#PBS -l nodes=2:ppn=4\n" in job.text and "mpiexec -n 8" in job.text
    assert scheduler("torque").name == "torque" and scheduler("pbs").name == "pbs"


# -- Torque on the real Slurm, through SchedMD's qsub/qstat/qdel wrappers ----------------
@pytest.fixture(scope="session")
def pbs_env():
    """An environment whose PATH starts with the Torque-style wrappers over the real Slurm."""
    run_setup_script("pbs-on-slurm-setup.sh", PREFIX, what="Torque-on-Slurm",
                     installed=os.path.exists(f"{PREFIX}/bin/qsub"))
    return dict(os.environ, PATH=f"{PREFIX}/bin:{os.environ['PATH']}")


@pytest.mark.slurm
@pytest.mark.pbs
def test_torque_array_start_map_stop(pbs_env):
    name = "torque-array"
    pdir = make_profile(name, "torque", env=pbs_env, job_shape="array")
    began = time.monotonic()
    started = hpclaunch("start", "--profile", name, "-n", "8", "--daemonize", env=pbs_env)
    elapsed = time.monotonic() - began
    assert started.returncode == 0, started.stdout + started.stderr
    assert "submitted torque job" in started.stdout
    assert "cluster of 8 engines is up" in started.stdout
    ids = job_ids(pdir)
    assert len(ids) == 1 and ids[0].isdigit(), "Slurm's qsub prints the bare job id"
    print(f"\ntorque (qsub wrappers over Slurm) array: 8 engines registered in {elapsed:.1f} s")
    try:
        import hpclaunch as hl

        rc = hl.Client(profile=name, timeout=30)
        try:
            assert len(rc.ids) == 8
            assert rc[:].map_sync(lambda x: x * x, range(32)) == [x * x for x in range(32)]
            tasks = rc[:].apply_sync(lambda: __import__("os").environ.get("SLURM_ARRAY_TASK_ID"))
            assert sorted(tasks, key=int) == [str(k) for k in range(1, 9)]
        finally:
            rc.close()
        status = hpclaunch("status", "--profile", name, env=pbs_env)
        assert status.returncode == 0, status.stderr
        assert f"torque job {ids[0]}: RUNNING (8 engines)" in status.stdout
    finally:
        stopped = hpclaunch("stop", "--profile", name, env=pbs_env)
    assert stopped.returncode == 0, stopped.stderr
    assert squeue_active(ids) == [], f"job {ids} still in squeue after stop"
    deadline = time.monotonic() + 10
    while processes_under(pdir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_under(pdir) == [], "engine or controller processes survived stop"
    assert os.path.isfile(os.path.join(paths.logs_dir(pdir), "job-1-torque-array.out")), \
        "the job's output goes where the script's #PBS -o says"


@pytest.mark.slurm
@pytest.mark.pbs
def test_torque_job_dying_before_registration_quotes_its_output(pbs_env):
    name = "torque-broken"
    pdir = make_profile(name, "torque", env=pbs_env, fanout="mpiexec",
                                  env_setup=["echo 'module python/9.9 not found' >&2", "exit 3"])
    result = hpclaunch("start", "--profile", name, "-n", "2", "--daemonize", "--timeout", "60",
                       env=pbs_env)
    assert result.returncode == 1
    assert "only 0 of 2 engines registered" in result.stderr
    assert "module python/9.9 not found" in result.stderr, result.stderr
    assert not os.path.exists(state_file(pdir))
    assert processes_under(pdir) == []
