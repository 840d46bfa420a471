"""OpenSSH command lines from a profile, and running them with errors that name the host.

Both users of SSH in the launch layer build their commands here: the ``ssh`` batch
system (engines on the hosts of ``hosts``) and the ``ssh`` fan-out inside batch jobs
(whose job script gets ``ssh_command`` rendered in). So key, options and BatchMode are
decided in one place, and what ``hpclaunch render`` shows is what ``start`` runs.
"""

import os
import shlex
import shutil
import subprocess

from ..tunnel import parse_sshserver, ssh_config_file
from .errors import LaunchError

#: Seconds one ssh/sftp command may take (connecting included) before the host counts as hung.
SSH_TIMEOUT = 60.0
#: ssh's own exit status for "could not connect or authenticate" (a remote command never ran).
SSH_FAILED = 255


class SshError(LaunchError):
    """An ssh or sftp command failed; the message names the host and quotes ssh's stderr."""


def common_options(profile):
    """Options every ssh/sftp call shares: never prompt, the profile's key and -o options."""
    options = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=20"]
    config = ssh_config_file()
    if config:
        options += ["-F", config]
    if profile.ssh_key:
        options += ["-i", os.path.expanduser(profile.ssh_key), "-o", "IdentitiesOnly=yes"]
    for option in profile.ssh_options:
        options += ["-o", option]
    return options


def ssh_command(profile):
    """The ssh command (no host) for job scripts, as shell words: ``ssh -o BatchMode=yes ...``."""
    return shlex.join(["ssh", *common_options(profile)])


def ssh_argv(profile, host, remote_command):
    """``ssh [options] [-p PORT] [user@]host REMOTE_COMMAND`` for a ``hosts`` entry."""
    server = parse_sshserver(host)
    port = ["-p", str(server.port)] if server.port else []
    return ["ssh", *common_options(profile), *port, server.destination, remote_command]


def sftp_argv(profile, host):
    """``sftp -b - [options] [-P PORT] [user@]host``: a batch of sftp commands on stdin."""
    server = parse_sshserver(host)
    port = ["-P", str(server.port)] if server.port else []
    return ["sftp", "-b", "-", *common_options(profile), *port, server.destination]


def run(argv, host, doing, stdin_text=None, timeout=SSH_TIMEOUT):
    """Run an ssh/sftp command; its stdout, or SshError naming ``host`` and quoting stderr."""
    if shutil.which(argv[0]) is None:
        raise SshError(f"{argv[0]} is not on PATH, so hpclaunch cannot reach {host} "
                       f"while {doing}; install the OpenSSH client (openssh-client)")
    try:
        done = subprocess.run(argv, input=stdin_text if stdin_text is not None else "",
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SshError(f"{argv[0]} to {host} did not finish in {timeout:g} s while {doing}; "
                       "is the host up and reachable?") from None
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip() or "(no output)"
        what = "could not connect" if done.returncode == SSH_FAILED else \
            f"failed (exit status {done.returncode})"
        raise SshError(f"{argv[0]} to host {host} {what} while {doing}: {said}")
    return done.stdout


def sh_c(script, *args):
    """A remote command line that runs ``script`` with POSIX sh and ``args`` as $1, $2, ...

    The remote login shell (bash, zsh, ksh: any POSIX shell) only parses ``sh -c '...'``."""
    return shlex.join(["sh", "-c", script, "hpclaunch", *(str(a) for a in args)])
