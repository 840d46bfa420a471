"""The drain time in profiles and job scripts: the margin, its checks, and the rendered bash
(run for real), with no scheduler."""

import ast
import os
import subprocess
import sys
import time

import pytest

from batch_helpers import hpclaunch, make_profile
from hpclaunch.launch import Profile, ProfileError, plan_jobs

#: An "engine" that prints the arguments the job script gives it.
SHOW_ARGS = [sys.executable, "-c", "import sys; print(sys.argv[1:])"]
SYSTEMS = ("slurm", "pbs", "torque", "sge", "lsf")


@pytest.mark.parametrize("walltime, margin", [("00:01:00", 6), ("01:00:00", 360),
                                              ("48:00:00", 600)])
def test_default_margin_is_a_tenth_of_the_walltime_at_most_ten_minutes(walltime, margin):
    assert Profile(system="slurm", walltime=walltime).drain_margin_seconds() == margin


def test_margin_in_seconds_or_hh_mm_ss():
    assert Profile(system="slurm", drain_margin=90).drain_margin_seconds() == 90
    assert Profile(system="slurm", drain_margin="00:05:00").drain_margin_seconds() == 300
    assert Profile(system="slurm", drain_margin=0).drain_margin_seconds() == 0


@pytest.mark.parametrize("margin, message", [
    (-5, "is not a time: give whole seconds"),
    ("soon", "is not a time: give whole seconds"),
    (True, "is not a time"),
    (2.5, "is not a time"),
    (60, "is not shorter than walltime = '00:01:00'"),
    ("00:02:00", "is not shorter than walltime"),
])
def test_bad_margins_say_what_to_write(margin, message):
    with pytest.raises(ProfileError, match=message):
        Profile(system="slurm", walltime="00:01:00", drain_margin=margin)


@pytest.mark.parametrize("system", SYSTEMS)
@pytest.mark.parametrize("shape", ["one-job", "array"])
def test_every_template_exports_the_job_end_and_drains_before_it(system, shape, tmp_path):
    profile = Profile(system=system, walltime="00:01:00", drain_margin=50, job_shape=shape)
    (job,) = plan_jobs(profile, 2, str(tmp_path), SHOW_ARGS)
    assert "export HPCLAUNCH_JOB_END=$(( $(date +%s) + 60 ))" in job.text
    assert "export HPCLAUNCH_DRAIN_AT=$(( HPCLAUNCH_JOB_END - 50 ))" in job.text
    assert job.text.count('--drain-at "$HPCLAUNCH_DRAIN_AT"') == 1
    assert job.text.index("HPCLAUNCH_DRAIN_AT=") < job.text.index("--drain-at")


def test_the_rendered_script_passes_the_engine_its_drain_time(tmp_path):
    """Run the array-shaped Slurm script with bash: the 'engine' gets the job's start
    plus the walltime minus the margin."""
    profile = Profile(system="slurm", walltime="00:10:00", drain_margin=45, job_shape="array")
    (job,) = plan_jobs(profile, 1, str(tmp_path), SHOW_ARGS)
    began = time.time()
    out = subprocess.run(["bash", "-c", job.text], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    args = ast.literal_eval(out.stdout.splitlines()[-1])
    assert args[0] == "--drain-at"
    assert abs(int(args[1]) - (began + 600 - 45)) <= 2


def test_margin_zero_turns_draining_off(tmp_path):
    (job,) = plan_jobs(Profile(system="slurm", drain_margin=0), 2, str(tmp_path), SHOW_ARGS)
    assert "export HPCLAUNCH_JOB_END=" in job.text
    assert "HPCLAUNCH_DRAIN_AT" not in job.text and "--drain-at" not in job.text


def test_a_profile_template_can_use_the_shared_partial(tmp_path):
    with open(tmp_path / "mine.sh.j2", "w") as f:
        f.write('{% from "_jobend.sh.j2" import job_end, engine_command with context %}\n'
                "#!/bin/bash\n{{ job_end() }}\n{{ engine_command }}\n")
    (job,) = plan_jobs(Profile(system="slurm", template="mine.sh.j2", drain_margin=30), 1,
                       str(tmp_path), ["engine"])
    assert "HPCLAUNCH_JOB_END - 30" in job.text
    assert job.text.rstrip().endswith('engine --drain-at "$HPCLAUNCH_DRAIN_AT"')


def test_render_shows_the_drain(tmp_path):
    make_profile("drain-render", "slurm", walltime="00:01:00", drain_margin=50)
    shown = hpclaunch("render", "--profile", "drain-render", "-n", "2")
    assert shown.returncode == 0, shown.stderr
    assert "engines drain 50 s before" in shown.stdout
    assert '--drain-at "$HPCLAUNCH_DRAIN_AT"' in shown.stdout


def test_typo_in_the_field_name_is_caught(tmp_path):
    with pytest.raises(ProfileError, match="did you mean 'drain_margin'"):
        Profile.from_dict({"system": "slurm", "drain_margins": 30})


@pytest.mark.parametrize("value", ["", "tomorrow", "-1"])
def test_engine_refuses_a_bad_drain_time(value):
    out = subprocess.run([sys.executable, "-m", "hpclaunch.engine", "--drain-at", value],
                         capture_output=True, text=True, timeout=30,
                         env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert out.returncode == 2
    assert "--drain-at" in out.stderr and "is not a time in epoch seconds" in out.stderr
