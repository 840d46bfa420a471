"""Copy one small file from an SSH server: scp with OpenSSH, SFTP with paramiko.

``hpclaunch connect`` uses it to bring a cluster's client connection file to a laptop.
The same server syntax, ssh config and key handling as the tunnels.
"""

import os
import subprocess
import tempfile

from ..error import TunnelError
from . import choose_backend, parse_sshserver
from .base import interactive, ssh_config_file

#: A connection file is a few hundred bytes; refuse anything absurd.
MAX_BYTES = 1 << 20


def fetch_file(sshserver, remote_path, sshkey=None, paramiko=None, timeout=30.0):
    """The bytes of ``remote_path`` on ``sshserver`` (relative paths: from the remote home)."""
    server = parse_sshserver(sshserver)
    backend = choose_backend(paramiko)
    if backend == "openssh":
        data = _fetch_scp(server, remote_path, sshkey, timeout)
    else:
        data = _fetch_sftp(server, remote_path, sshkey, timeout)
    if len(data) > MAX_BYTES:
        raise TunnelError(f"{server}:{remote_path} is {len(data)} bytes: not a connection file")
    return data


def _fetch_scp(server, remote_path, sshkey, timeout):
    cmd = ["scp", "-q", "-o", "ConnectTimeout=%d" % max(1, int(timeout))]
    if not interactive():
        cmd += ["-o", "BatchMode=yes"]
    config = ssh_config_file()
    if config:
        cmd += ["-F", config]
    if sshkey:
        cmd += ["-i", os.path.expanduser(sshkey)]
    if server.port:
        cmd += ["-P", str(server.port)]
    with tempfile.TemporaryDirectory(prefix="hpclaunch-fetch-") as tmp:
        local = os.path.join(tmp, "file")
        cmd += [f"{server.destination}:{remote_path}", local]
        try:
            done = subprocess.run(cmd, stdin=None if interactive() else subprocess.DEVNULL,
                                  capture_output=not interactive(), timeout=timeout + 30)
        except FileNotFoundError:
            raise TunnelError("there is no scp command on PATH: install OpenSSH or use "
                              "the paramiko backend") from None
        except subprocess.TimeoutExpired:
            raise TunnelError(f"scp from {server} (openssh backend) took more than "
                              f"{timeout + 30:g} s") from None
        if done.returncode != 0:
            detail = (done.stderr or b"").decode("utf-8", "replace").strip() or \
                f"scp exited with status {done.returncode}"
            raise TunnelError(f"cannot copy {remote_path} from {server} (openssh backend, "
                              f"scp): {detail}")
        with open(local, "rb") as f:
            return f.read(MAX_BYTES + 1)


def _fetch_sftp(server, remote_path, sshkey, timeout):
    from . import paramiko_session

    def describe(detail):
        return TunnelError(f"cannot copy {remote_path} from {server} (paramiko backend, "
                           f"SFTP): {detail}")

    client = paramiko_session.connect(server, sshkey, timeout, describe=describe)
    try:
        sftp = client.open_sftp()
        try:
            with sftp.open(remote_path, "rb") as f:
                return f.read(MAX_BYTES + 1)
        except OSError as e:
            raise describe(f"{e.strerror or e}") from None
        finally:
            sftp.close()
    finally:
        client.close()
