"""The hpclaunch command, run as a real subprocess (``python -m hpclaunch``)."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from batch_helpers import hpclaunch
from conftest import alive

from hpclaunch.launch import state_file
from hpclaunch.protocol import paths, read_connection_file



def recorded_pids(pdir):
    with open(state_file(pdir)) as f:
        state = json.load(f)
    return state["controller"]["pid"], [e["pid"] for e in state["engines"]]


def test_help_lists_commands_without_importing_zmq():
    result = hpclaunch("--help")
    assert result.returncode == 0
    for command in ("start", "stop", "status", "controller", "engine"):
        assert re.search(rf"^\s+{command}\s", result.stdout, re.M), command
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, hpclaunch.cli; print('zmq' in sys.modules)"],
        capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "False", "`hpclaunch --help` must not pay for zmq"


def test_console_script_is_installed():
    script = os.path.join(os.path.dirname(sys.executable), "hpclaunch")
    if not os.path.exists(script):
        pytest.skip("hpclaunch is not installed as a console script in this environment")
    result = subprocess.run([script, "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and "hpclaunch" in result.stdout


@pytest.mark.parametrize("n", ["0", "-2"])
def test_start_refuses_fewer_than_one_engine(n):
    result = hpclaunch("start", "-n", n, "--profile", "never")
    assert result.returncode == 2
    assert f"a cluster needs at least 1 engine, not {n}" in result.stderr
    assert not os.path.exists(paths.profile_dir("never"))


def test_stop_and_status_without_a_cluster_say_so():
    for command in ("stop", "status"):
        result = hpclaunch(command, "--profile", "nothing-here")
        assert result.returncode == 1, command
        assert ("no cluster is running for profile 'nothing-here'; start one with: "
                "hpclaunch start --profile nothing-here -n N") in result.stderr


def test_daemonized_start_status_stop_leaves_no_process():
    pdir = paths.profile_dir("cli")
    result = hpclaunch("start", "-n", "2", "--profile", "cli", "--daemonize",
                       "--hb-period", "0.5", "--hb-liveness", "4")
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"engine \d+ registered: pid \d+ on .* \(1/2\)", result.stdout)
    assert "(2/2)" in result.stdout
    assert "hpclaunch stop --profile cli" in result.stdout
    controller, engines = recorded_pids(pdir)
    assert all(alive(p) for p in [controller, *engines])

    again = hpclaunch("start", "-n", "1", "--profile", "cli")
    assert again.returncode == 1
    assert (f"already running (pid {controller}); hpclaunch stop --profile cli first"
            in again.stderr)

    status = hpclaunch("status", "--profile", "cli")
    assert status.returncode == 0, status.stderr
    key = read_connection_file(paths.client_file(pdir))["key"].decode()
    for shown in (result, status):   # the cluster key never reaches the terminal
        assert key not in shown.stdout + shown.stderr
    lines = status.stdout.splitlines()
    assert lines[0].startswith(f"controller: pid {controller} at tcp://127.0.0.1:")
    assert "engines: 2 registered of 2 launched" in status.stdout
    header = next(i for i, line in enumerate(lines) if line.startswith("ENGINE"))
    assert lines[header].split() == ["ENGINE", "HOST", "PID", "STATE", "TASKS", "DONE"]
    rows = [line.split() for line in lines[header + 1:]]
    assert sorted(int(row[2]) for row in rows) == sorted(engines)
    assert [row[3] for row in rows] == ["idle", "idle"]
    assert [row[4] for row in rows] == ["0", "0"]

    stop = hpclaunch("stop", "--profile", "cli")
    assert stop.returncode == 0, stop.stderr
    assert f"controller pid {controller} and 2 engines" in stop.stdout
    assert not any(alive(p) for p in [controller, *engines])
    assert not os.path.exists(state_file(pdir))
    assert not os.path.exists(paths.client_file(pdir))

    after = hpclaunch("stop", "--profile", "cli")
    assert after.returncode == 1
    assert "no cluster is running for profile 'cli'" in after.stderr


def test_a_profile_broken_after_start_does_not_block_status_or_stop():
    pdir = paths.profile_dir("cli-broken")
    result = hpclaunch("start", "-n", "1", "--profile", "cli-broken", "--daemonize")
    assert result.returncode == 0, result.stdout + result.stderr
    controller, engines = recorded_pids(pdir)
    with open(os.path.join(pdir, "profile.toml"), "a") as f:
        f.write('\nsytem = "slurm"\n')   # a typo made while the cluster runs
    status = hpclaunch("status", "--profile", "cli-broken")
    assert status.returncode == 0, status.stderr
    assert "engines: 1 registered of 1 launched" in status.stdout
    stop = hpclaunch("stop", "--profile", "cli-broken")
    assert stop.returncode == 0, stop.stderr
    assert not any(alive(p) for p in [controller, *engines])
    assert not os.path.exists(state_file(pdir))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_foreground_start_stops_the_cluster_on_a_signal(sig):
    pdir = paths.profile_dir("foreground")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpclaunch", "start", "-n", "1", "--profile", "foreground"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
    output = []
    try:
        for line in proc.stdout:
            output.append(line)
            if "press Ctrl-C" in line:
                break
        assert "press Ctrl-C" in "".join(output), "".join(output)
        controller, engines = recorded_pids(pdir)
        proc.send_signal(sig)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, "".join(output) + rest
    assert "stopping the cluster" in rest
    assert not any(alive(p) for p in [controller, *engines])
    assert not os.path.exists(state_file(pdir))


def test_engines_that_never_register_are_reported_and_everything_stops():
    pdir = paths.profile_dir("broken")
    started = time.monotonic()
    result = hpclaunch("start", "-n", "2", "--profile", "broken", "--timeout", "30",
                       "--engine-args=--no-such-option")
    assert result.returncode == 1
    assert time.monotonic() - started < 30
    assert "only 0 of 2 engines registered" in result.stderr
    assert re.search(r"--- engine-[01] \(pid \d+, exited, status 2\)", result.stderr)
    assert "unrecognized arguments: --no-such-option" in result.stderr
    assert not os.path.exists(state_file(pdir))
    assert not os.path.exists(paths.client_file(pdir))


def test_controller_arguments_pass_through():
    result = hpclaunch("controller", "--help")
    assert result.returncode == 0
    assert "--hb-period" in result.stdout and "--profile-dir" in result.stdout


def test_two_starts_at_once_give_one_cluster():
    command = [sys.executable, "-m", "hpclaunch", "start", "-n", "1", "--profile", "race",
               "--daemonize"]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, stdin=subprocess.DEVNULL) for _ in range(2)]
    results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    try:
        assert sorted(code for code, _, _ in results) == [0, 1], results
        loser = next(err for code, _, err in results if code == 1)
        assert ("already running" in loser or "another hpclaunch start" in loser), loser
    finally:
        hpclaunch("stop", "--profile", "race")
    assert not os.path.exists(state_file(paths.profile_dir("race")))


def test_foreground_start_ends_cleanly_when_a_client_shuts_the_hub_down():
    import hpclaunch as hl

    pdir = paths.profile_dir("fg-client")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpclaunch", "start", "-n", "2", "--profile", "fg-client"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
    try:
        for line in proc.stdout:
            if "press Ctrl-C" in line:
                break
        controller, engines = recorded_pids(pdir)
        with hl.Client(profile="fg-client", timeout=10) as rc:
            rc.shutdown(hub=True)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, rest
    assert "the controller was shut down" in rest
    assert not any(alive(p) for p in [controller, *engines])
    assert not os.path.exists(state_file(pdir))
