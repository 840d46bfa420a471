"""``hpclaunch connect user@login --profile NAME``: bring a cluster's client connection
file to this machine, so ``hl.Client(profile=NAME)`` tunnels to it through SSH.

The file is fetched over scp (OpenSSH) or SFTP (paramiko), checked, and stored 0600 in a
0700 security dir with ``ssh`` (and ``sshkey``) set: the Client reads those as its default
``sshserver``/``sshkey``.
"""

import json
import os

import click

#: Where the remote profile's client file is, relative to the remote home (scp/SFTP default).
REMOTE_HPCLAUNCH_DIR = ".hpclaunch"


def remote_client_file(remote_profile, remote_profile_dir):
    if remote_profile_dir:
        return f"{remote_profile_dir.rstrip('/')}/security/client.json"
    return f"{REMOTE_HPCLAUNCH_DIR}/profile_{remote_profile}/security/client.json"


def parse_connection_bytes(data, where):
    """The connection info in ``data``, or a ClickException saying what is wrong with it."""
    from ..protocol.connection import REQUIRED

    try:
        info = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise click.ClickException(f"{where} is not a connection file (not JSON: {e})")
    if not isinstance(info, dict) or any(k not in info for k in REQUIRED):
        raise click.ClickException(
            f"{where} is not a client connection file (it needs {', '.join(REQUIRED)}): is "
            f"the remote profile right?")
    return info


@click.command()
@click.argument("sshserver", metavar="USER@LOGIN")
@click.option("--profile", required=True, help="local profile to store the connection in")
@click.option("--port", type=click.IntRange(1, 65535), help="SSH port of the login node")
@click.option("--key", type=click.Path(dir_okay=False), help="SSH private key file")
@click.option("--remote-profile", help="profile name on the cluster (default: --profile)")
@click.option("--remote-profile-dir",
              help="profile directory on the cluster (wins over --remote-profile; default: "
                   "~/.hpclaunch/profile_<remote profile>)")
@click.option("--backend", type=click.Choice(["auto", "openssh", "paramiko"]), default="auto",
              show_default=True, help="scp (OpenSSH) or SFTP (paramiko); auto: scp if ssh is "
                                      "on PATH")
def connect(sshserver, profile, port, key, remote_profile, remote_profile_dir, backend):
    """Fetch a cluster's client connection file through SSH into a local profile.

    \b
      hpclaunch connect me@login.example.org --profile slurm
      python -c "import hpclaunch as hl; print(hl.Client(profile='slurm').ids)"
    """
    from ..error import TunnelError
    from ..protocol import ensure_private_dir, paths, write_connection_file
    from ..tunnel import parse_sshserver
    from ..tunnel.fetch import fetch_file

    try:
        server = parse_sshserver(sshserver)
    except TunnelError as e:
        raise click.ClickException(str(e))
    if port:
        server = type(server)(server.host, server.user, port)
    remote = remote_client_file(remote_profile or profile, remote_profile_dir)
    paramiko = {"auto": None, "openssh": False, "paramiko": True}[backend]
    try:
        data = fetch_file(server, remote, sshkey=key, paramiko=paramiko)
    except TunnelError as e:
        raise click.ClickException(str(e))
    info = parse_connection_bytes(data, f"{server}:{remote}")
    info["ssh"] = str(server)
    if key:
        info["sshkey"] = os.path.abspath(os.path.expanduser(key))
    else:
        info.pop("sshkey", None)
    pdir = ensure_private_dir(paths.profile_dir(profile))
    target = write_connection_file(paths.client_file(pdir), info)
    click.echo(f"stored {server}:{remote} as {target} (mode 600); connect with "
               f"hl.Client(profile={profile!r}), which tunnels through {server}")
