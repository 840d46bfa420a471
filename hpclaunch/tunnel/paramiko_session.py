"""Log in with paramiko the way ``ssh`` would: the ssh config's HostName/Port/User/
IdentityFile, known host keys, the agent; a passphrase or password is asked for only
when a person is at the terminal."""

import getpass
import os
import socket

import paramiko

from ..error import TunnelError
from .base import interactive, ssh_config_file

#: Bigger than paramiko's 2 MiB default, so a 100 MB push is not throttled by window updates.
WINDOW_SIZE = 16 * 1024 * 1024


def host_settings(server):
    """hostname, port, user, identity files and host-key policy for ``server``."""
    path = ssh_config_file() or os.path.expanduser("~/.ssh/config")
    config = paramiko.SSHConfig.from_path(path) if os.path.isfile(path) else paramiko.SSHConfig()
    found = config.lookup(server.host)
    known = found.get("userknownhostsfile") or "~/.ssh/known_hosts"
    if isinstance(known, str):
        known = known.split()
    return {
        "hostname": found.get("hostname", server.host),
        "port": server.port or int(found.get("port", 22)),
        "user": server.user or found.get("user") or getpass.getuser(),
        "identityfile": [os.path.expanduser(f) for f in found.get("identityfile", [])],
        "known_hosts": [os.path.expanduser(f) for f in known],
        "strict": str(found.get("stricthostkeychecking", "ask")).lower(),
    }


def connect(server, sshkey=None, timeout=20.0, describe=None):
    """A logged-in ``paramiko.SSHClient`` for ``server`` (an SSHServer); TunnelError
    (worded by ``describe(detail)``) when it cannot log in."""
    describe = describe or (lambda detail: TunnelError(f"ssh to {server} (paramiko): {detail}"))
    settings = host_settings(server)
    client = paramiko.SSHClient()
    client.load_system_host_keys()
    for path in settings["known_hosts"]:
        if path != "/dev/null" and os.path.isfile(path):
            client.get_host_keys().load(path)
    if settings["strict"] in ("no", "off", "accept-new"):
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    else:
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
    keys = [os.path.expanduser(sshkey)] if sshkey else settings["identityfile"]
    keys = [k for k in keys if os.path.isfile(k)] or None
    kwargs = dict(hostname=settings["hostname"], port=settings["port"],
                  username=settings["user"], key_filename=keys, timeout=timeout,
                  banner_timeout=timeout, auth_timeout=timeout, allow_agent=True,
                  look_for_keys=True)
    asked = set()
    while True:
        try:
            client.connect(**kwargs)
            return client
        except paramiko.PasswordRequiredException:
            if not interactive() or "passphrase" in asked:
                client.close()
                raise describe("the SSH key is encrypted and no one is at a terminal to type "
                               "its passphrase: load it into ssh-agent first") from None
            asked.add("passphrase")
            kwargs["passphrase"] = getpass.getpass(f"Passphrase for the SSH key of {server}: ")
        except paramiko.AuthenticationException as e:
            if not interactive() or "password" in asked:
                client.close()
                raise describe(f"authentication failed ({e}); give sshkey=, or add your key to "
                               f"ssh-agent or the server's authorized_keys") from None
            asked.add("password")
            kwargs["password"] = getpass.getpass(
                f"{settings['user']}@{settings['hostname']}'s password: ")
        except paramiko.BadHostKeyException as e:
            client.close()
            raise describe(f"the server's host key does not match known_hosts ({e}): check "
                           f"the server, then fix ~/.ssh/known_hosts") from None
        except paramiko.SSHException as e:
            client.close()
            hint = (": log in once with `ssh` to accept its host key"
                    if "known_hosts" in str(e) else "")
            raise describe(f"{e}{hint}") from None
        except (OSError, socket.timeout) as e:
            client.close()
            raise describe(
                f"cannot reach {settings['hostname']}:{settings['port']} ({e})") from None
