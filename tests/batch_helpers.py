"""What the tests of the CLI and of real batch systems share: running ``hpclaunch`` as a
user would, running the project's own set-up scripts, and reading a cluster's jobs."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import pytest

from hpclaunch.launch import load_profile, profile_file, state_file
from hpclaunch.protocol import paths

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "scripts")
#: squeue states of a job that is still in the queue.
SQUEUE_ACTIVE = "PD,R,CG,CF,S"


def hpclaunch(*args, env=None, timeout=180):
    """``python -m hpclaunch ARGS`` with no stdin, output captured."""
    return subprocess.run([sys.executable, "-m", "hpclaunch", *args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL, env=env)


def run_setup_script(name, *args, what, installed, timeout=300):
    """Run ``scripts/NAME`` to install and start a real component (``what``).

    Skips, saying why, where it cannot run (not root; nothing installed and no apt-get);
    fails with the script's own error output when it breaks."""
    if os.geteuid() != 0:
        pytest.skip(f"the {what} tests install and start it with apt-get, which needs root")
    if not installed and shutil.which("apt-get") is None:
        pytest.skip(f"no {what} here and no apt-get to install it with (Debian/Ubuntu only)")
    script = os.path.join(SCRIPTS, name)
    result = subprocess.run(["bash", script, *args], capture_output=True, text=True,
                            timeout=timeout)
    if result.returncode != 0:
        pytest.fail(f"{script} failed (status {result.returncode}):\n{result.stderr[-3000:]}")


def make_profile(name, system, env=None, **fields):
    """``hpclaunch profile create NAME --system SYSTEM``, then set ``fields``; the profile dir."""
    result = hpclaunch("profile", "create", name, "--system", system, "--force", env=env)
    assert result.returncode == 0, result.stderr
    pdir = paths.profile_dir(name)
    profile = dataclasses.replace(load_profile(pdir), **fields)
    profile.save(profile_file(pdir))
    return pdir


def job_ids(pdir):
    """The batch job ids recorded in a cluster's state file."""
    with open(state_file(pdir)) as f:
        return [j["job_id"] for j in json.load(f)["jobs"]]


def squeue_active(ids):
    """Which of ``ids`` squeue still shows as pending or running."""
    out = subprocess.run(["squeue", "--noheader", f"--states={SQUEUE_ACTIVE}",
                          f"--jobs={','.join(ids)}", "--format=%F"],
                         capture_output=True, text=True).stdout
    return sorted(set(out.split()) & set(ids))
