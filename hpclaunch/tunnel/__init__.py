"""One SSH tunnel to the controller's one port, for clients and engines outside the cluster.

``open_tunnel(url, sshserver)`` forwards a free local loopback port to the controller's
host:port as the SSH server sees it and returns a :class:`~.base.Tunnel` whose ``url`` the
sockets connect to (CurveZMQ keys still apply end to end). Two backends: OpenSSH (the
user's own config, agent and ProxyJump) and paramiko (pure Python). paramiko is imported
only when that backend is used, so engines stay light.

Imports only the protocol-free leaf ``hpclaunch.error``: the client and the engine may both
use it, and it knows nothing of either.
"""

import shutil
from urllib.parse import urlsplit

from ..error import TunnelError
from .base import SSHServer, Tunnel, parse_sshserver, ssh_config_file

__all__ = ["SSHServer", "Tunnel", "TunnelError", "choose_backend", "open_tunnel",
           "parse_sshserver", "ssh_config_file", "split_tcp_url"]


def choose_backend(paramiko=None):
    """``'openssh'`` or ``'paramiko'``: None picks OpenSSH when ``ssh`` is on PATH."""
    if paramiko is None:
        return "openssh" if shutil.which("ssh") else "paramiko"
    return "paramiko" if paramiko else "openssh"


def split_tcp_url(url):
    """``(host, port)`` of a ``tcp://host:port`` url; a wildcard host means the SSH
    server's own loopback (the controller listens on every interface there)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "tcp" or not parts.hostname or not port:
        raise TunnelError(f"cannot tunnel to {url!r}: expected tcp://HOST:PORT")
    host = parts.hostname
    if host in ("*", "0.0.0.0"):
        host = "127.0.0.1"
    return host, port


def open_tunnel(url, sshserver, sshkey=None, paramiko=None, timeout=20.0):
    """Open one tunnel from ``127.0.0.1:<free port>`` to ``url`` through ``sshserver``
    (``user@host[:port]``, or an ssh config alias). Raises TunnelError, naming the server
    and the backend, when it cannot."""
    host, port = split_tcp_url(url)
    server = parse_sshserver(sshserver)
    backend = choose_backend(paramiko)
    if backend == "openssh":
        if not shutil.which("ssh"):
            raise TunnelError(
                f"paramiko=False asks for OpenSSH, but there is no ssh command on PATH; "
                f"install OpenSSH or pass paramiko=True (tunnel to {server})")
        from .openssh import OpenSSHTunnel as backend_class
    else:
        try:
            from .paramiko_tunnel import ParamikoTunnel as backend_class
        except ImportError as e:
            raise TunnelError(
                f"the paramiko backend needs the paramiko package ({e}); pip install "
                f"paramiko, or use OpenSSH (paramiko=False) (tunnel to {server})") from None
    return backend_class(server, host, port, sshkey=sshkey, timeout=timeout)
