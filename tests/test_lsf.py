"""hpclaunch on LSF. No LSF server can be installed here, so the end-to-end tests run against
tests/lsf_shim.py: the project's own small bsub/bjobs/bkill shim, backed by the real single-node
Slurm that scripts/slurm-setup.sh starts (needs root and apt; marked ``slurm`` and ``lsf``),
printing LSF's documented message formats. They show hpclaunch drives those formats, not that a
real LSF agrees. The fast tests parse bsub's and bjobs' documented output (LSF 10.1
``bjobs -o ... -json``).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from batch_helpers import ROOT, hpclaunch, job_ids, make_profile, run_setup_script, squeue_active
from conftest import processes_under
from hpclaunch.launch import JobState, Profile, plan_jobs
from hpclaunch.launch.lsf import LsfScheduler, lsf_state, parse_bjobs_json
from hpclaunch.launch.scheduler import scheduler
from hpclaunch.protocol import paths

SHIM = os.path.join(ROOT, "tests", "lsf_shim.py")
ENGINE = ["python", "-m", "hpclaunch.engine", "--profile-dir", "/p"]

#: bjobs -a -o "jobid jobindex stat exit_code" -json 501 502 503 504 505, in LSF 10.1's format.
BJOBS_JSON = """{
  "COMMAND":"bjobs",
  "JOBS":8,
  "RECORDS":[
    {"JOBID":"501", "JOBINDEX":"1", "STAT":"DONE", "EXIT_CODE":""},
    {"JOBID":"501", "JOBINDEX":"2", "STAT":"RUN", "EXIT_CODE":""},
    {"JOBID":"501", "JOBINDEX":"3", "STAT":"PEND", "EXIT_CODE":""},
    {"JOBID":"502", "JOBINDEX":"0", "STAT":"EXIT", "EXIT_CODE":"3"},
    {"JOBID":"503", "JOBINDEX":"0", "STAT":"EXIT", "EXIT_CODE":"130"},
    {"JOBID":"504", "JOBINDEX":"0", "STAT":"PSUSP", "EXIT_CODE":""},
    {"JOBID":"505", "ERROR":"Job <505> is not found"}
  ]
}"""


def test_bsub_job_id():
    for said in ("Job <1234> is submitted to default queue <normal>.",
                 "Job <1234> is submitted to queue <short>."):
        assert re.search(LsfScheduler.job_id_regex, said).group(1) == "1234"


def test_bjobs_json_rolls_array_elements_into_their_job():
    assert parse_bjobs_json(BJOBS_JSON, ["501", "502", "503", "504", "505"]) == {
        "501": JobState.RUNNING, "502": JobState.FAILED, "503": JobState.CANCELLED,
        "504": JobState.PENDING, "505": JobState.DONE}
    assert lsf_state("DONE") is JobState.DONE and lsf_state("EXIT", "143") is JobState.CANCELLED
    assert parse_bjobs_json("", ["9"]) == {"9": JobState.DONE}


def test_bjobs_garbage_is_a_clear_error():
    from hpclaunch.launch import SchedulerError

    with pytest.raises(SchedulerError, match="not LSF's JSON"):
        parse_bjobs_json("bjobs: illegal option -- json\n", ["1"])


def test_a_bjobs_that_cannot_answer_is_not_read_as_jobs_ended(tmp_path, monkeypatch):
    from hpclaunch.launch import SchedulerError

    fake = tmp_path / "bjobs"
    fake.write_text("#!/bin/sh\necho 'LSF is down. Please wait ...' >&2; exit 255\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    with pytest.raises(SchedulerError, match="could not report job states.*LSF is down"):
        scheduler("lsf").poll(["501"])


def test_lsf_renders_a_named_array_submitted_on_stdin(tmp_path):
    (job,) = plan_jobs(Profile(system="lsf", job_shape="array", walltime="00:30:00"), 8,
                       str(tmp_path), ENGINE)
    assert "#BSUB -J hpclaunch[1-8]\n" in job.text and "#BSUB -W 30\n" in job.text
    assert job.output.endswith("job-1-%J_%I.out")
    assert job.submit == f"bsub < {tmp_path}/jobs/engines-1.sh"
    assert scheduler("lsf").name == "lsf"


# -- the shim over the real Slurm ------------------------------------------------------
@pytest.fixture(scope="session")
def lsf_env(tmp_path_factory):
    """PATH with bsub/bjobs/bkill from tests/lsf_shim.py first, over a running real Slurm."""
    run_setup_script("slurm-setup.sh", what="Slurm (under the LSF shim)",
                     installed=shutil.which("sbatch") is not None)
    bindir = tmp_path_factory.mktemp("lsf-shim-bin")
    for command in ("bsub", "bjobs", "bkill"):
        path = bindir / command
        path.write_text(f'#!/bin/sh\nexec {sys.executable} {SHIM} {command} "$@"\n')
        path.chmod(0o755)
    return dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}")


@pytest.mark.slurm
@pytest.mark.lsf
def test_shim_prints_lsf_formats(lsf_env, tmp_path):
    script = tmp_path / "job.lsf"
    script.write_text("#!/bin/bash\n#BSUB -J shim[1-2]\n#BSUB -o " + str(tmp_path) +
                      "/out.%J.%I\necho $LSB_JOBID $LSB_JOBINDEX $LSB_JOBNAME\n")
    with open(script) as f:
        said = subprocess.run(["bsub"], stdin=f, capture_output=True, text=True, env=lsf_env)
    match = re.fullmatch(r"Job <(\d+)> is submitted to default queue <normal>\.\n", said.stdout)
    assert match, said.stdout + said.stderr
    job_id = match.group(1)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        listed = subprocess.run(["bjobs", "-a", "-o", "jobid jobindex stat exit_code", "-json",
                                 job_id, "999999"], capture_output=True, text=True, env=lsf_env)
        records = json.loads(listed.stdout)["RECORDS"]
        if all(r.get("STAT") == "DONE" for r in records if "ERROR" not in r):
            break
        time.sleep(0.5)
    assert sorted(r["JOBINDEX"] for r in records if "ERROR" not in r) == ["1", "2"]
    assert {"JOBID": "999999", "ERROR": "Job <999999> is not found"} in records
    assert (tmp_path / f"out.{job_id}.2").read_text() == f"{job_id} 2 shim\n"


@pytest.mark.slurm
@pytest.mark.lsf
def test_lsf_array_start_map_stop(lsf_env):
    name = "lsf-array"
    pdir = make_profile(name, "lsf", env=lsf_env, job_shape="array")
    began = time.monotonic()
    started = hpclaunch("start", "--profile", name, "-n", "8", "--daemonize", env=lsf_env)
    elapsed = time.monotonic() - began
    assert started.returncode == 0, started.stdout + started.stderr
    assert "submitted lsf job" in started.stdout
    assert "cluster of 8 engines is up" in started.stdout
    ids = job_ids(pdir)
    assert len(ids) == 1
    print(f"\nlsf (test shim over Slurm) array: 8 engines registered in {elapsed:.1f} s")
    try:
        import hpclaunch as hl

        rc = hl.Client(profile=name, timeout=30)
        try:
            assert len(rc.ids) == 8
            assert rc[:].map_sync(lambda x: x + 1, range(32)) == list(range(1, 33))
            seen = rc[:].apply_sync(lambda: (__import__("os").environ.get("LSB_JOBID"),
                                             __import__("os").environ.get("LSB_JOBINDEX")))
            assert sorted(seen) == sorted((ids[0], str(k)) for k in range(1, 9))
        finally:
            rc.close()
        status = hpclaunch("status", "--profile", name, env=lsf_env)
        assert status.returncode == 0, status.stderr
        assert f"lsf job {ids[0]}: RUNNING (8 engines)" in status.stdout
    finally:
        stopped = hpclaunch("stop", "--profile", name, env=lsf_env)
    assert stopped.returncode == 0, stopped.stderr
    assert squeue_active(ids[:1]) == [], f"job {ids[0]} still in squeue after stop"
    deadline = time.monotonic() + 10
    while processes_under(pdir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_under(pdir) == [], "engine or controller processes survived stop"
    logs = os.listdir(paths.logs_dir(pdir))
    assert f"job-1-{ids[0]}_1.out" in logs, f"bsub -o %J_%I names each element's output: {logs}"


@pytest.mark.slurm
@pytest.mark.lsf
def test_rejected_bsub_is_quoted(lsf_env):
    name = "lsf-rejected"
    pdir = make_profile(name, "lsf", env=lsf_env, queue="no-such-queue")
    result = hpclaunch("start", "--profile", name, "-n", "2", "--daemonize", env=lsf_env)
    assert result.returncode == 1
    assert "lsf rejected" in result.stderr and "no-such-queue: No such queue" in result.stderr
    assert processes_under(pdir) == []
