"""What the tests that need a real sshd share: starting the project's private sshd
(scripts/sshd-setup.sh), an ssh config that accepts its throwaway host key, and checks
that no ssh (or other) process outlived a test."""

import contextlib
import os
import socket
import subprocess

import psutil

from batch_helpers import SCRIPTS, run_setup_script

#: Host keys are generated per run, so nothing is worth remembering or checking.
SSH_CONFIG = """Host *
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  LogLevel ERROR
"""


@contextlib.contextmanager
def throwaway_host_keys(state_dir):
    """Point $HPCLAUNCH_SSH_CONFIG (read by every ssh hpclaunch runs) at SSH_CONFIG."""
    config = os.path.join(state_dir, "ssh_config")
    with open(config, "w") as f:
        f.write(SSH_CONFIG)
    saved = os.environ.get("HPCLAUNCH_SSH_CONFIG")
    os.environ["HPCLAUNCH_SSH_CONFIG"] = config
    try:
        yield config
    finally:
        if saved is None:
            os.environ.pop("HPCLAUNCH_SSH_CONFIG", None)
        else:
            os.environ["HPCLAUNCH_SSH_CONFIG"] = saved


def free_port():
    """A TCP port nothing listens on right now (nothing listens on it afterwards either)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def private_sshd(state_dir, port, listen="127.0.0.1"):
    """The project's own sshd on listen:port (root login with a generated key) while in the
    block: yields {"key": private key file, "pid": sshd's pid, "port": port}."""
    run_setup_script("sshd-setup.sh", state_dir, str(port), listen, what="sshd",
                     installed=os.path.exists("/usr/sbin/sshd"))
    try:
        with open(os.path.join(state_dir, "sshd.pid")) as f:
            pid = int(f.read())
        yield {"key": os.path.join(state_dir, "id_ed25519"), "pid": pid, "port": port}
    finally:
        subprocess.run(["bash", os.path.join(SCRIPTS, "sshd-setup.sh"), "--stop", state_dir],
                       timeout=60)


def ssh_processes_of(pid):
    """ssh/scp child processes still running under ``pid``."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for child in children:
        try:
            if child.name() in ("ssh", "scp") and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


