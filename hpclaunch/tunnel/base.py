"""What both tunnel backends share: the SSH server's address, a free local port, and
telling the owner (once) when the tunnel dropped."""

import abc
import logging
import os
import socket
import sys
import threading
from dataclasses import dataclass

from ..error import TunnelError

log = logging.getLogger("hpclaunch.tunnel")

#: An ssh_config file used instead of the user's own by both backends (``ssh -F``); tests
#: and sites with special host-key settings point it at their own file.
SSH_CONFIG_ENV = "HPCLAUNCH_SSH_CONFIG"


def ssh_config_file():
    """The ssh_config file named by ``$HPCLAUNCH_SSH_CONFIG``, or None."""
    path = os.environ.get(SSH_CONFIG_ENV)
    return os.path.expanduser(path) if path else None


def interactive():
    """Prompts for passwords and passphrases only when a person can answer them."""
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (ValueError, OSError):
        return False


@dataclass(frozen=True)
class SSHServer:
    """``user@host:port`` split up; user and port are None when not given, so the
    user's ssh config (or the backend's default) decides them."""
    host: str
    user: str = None
    port: int = None

    @property
    def destination(self):
        return f"{self.user}@{self.host}" if self.user else self.host

    def __str__(self):
        return self.destination + (f":{self.port}" if self.port else "")


def parse_sshserver(text):
    """Parse ``[user@]host[:port]`` (``host`` may be an ssh config alias)."""
    if isinstance(text, SSHServer):
        return text
    if not isinstance(text, str) or not text.strip():
        raise TunnelError(f"sshserver must be 'user@host[:port]', not {text!r}")
    text = text.strip()
    user, _, hostport = text.rpartition("@")
    host, port = hostport, None
    if hostport.count(":") == 1:
        host, port_text = hostport.split(":")
        try:
            port = int(port_text)
        except ValueError:
            raise TunnelError(f"sshserver {text!r}: port {port_text!r} is not a number") from None
        if not 0 < port < 65536:
            raise TunnelError(f"sshserver {text!r}: port {port} is out of range")
    if not host or any(c.isspace() for c in text):
        raise TunnelError(f"sshserver must be 'user@host[:port]', not {text!r}")
    return SSHServer(host, user or None, port)


def free_local_port():
    """A loopback port nobody listens on right now (the backend retries if it is taken
    before it binds)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Tunnel(abc.ABC):
    """A running tunnel: connect to ``url``; ``close()`` ends it (idempotent).

    ``on_drop(callback)`` registers ``callback(TunnelError)``, called once from a watcher
    thread if the tunnel ends while nobody closed it.
    """

    backend = "?"

    def __init__(self, server, remote_host, remote_port):
        self.server = server
        self.remote_host, self.remote_port = remote_host, remote_port
        self.local_port = None
        self.closed = False
        self.dropped = None
        self._callbacks = []
        self._lock = threading.Lock()

    @property
    def url(self):
        return f"tcp://127.0.0.1:{self.local_port}"

    @property
    @abc.abstractmethod
    def alive(self):
        """True while the tunnel carries traffic."""

    def on_drop(self, callback):
        with self._lock:
            already = self.dropped
            if already is None:
                self._callbacks.append(callback)
        if already is not None:
            callback(already)

    def _report_drop(self, detail):
        """Called by the backend's watcher when the tunnel ended by itself."""
        with self._lock:
            if self.closed or self.dropped is not None:
                return
            self.dropped = exc = TunnelError(
                f"the SSH tunnel to the controller ({self.remote_host}:{self.remote_port}) "
                f"through {self.server} ({self.backend} backend) dropped: {detail}. The "
                f"controller keeps every result: create a new Client and fetch them by "
                f"msg_id with rc.get_result(msg_ids).")
            callbacks, self._callbacks = self._callbacks, []
        log.error("%s", exc)
        for callback in callbacks:
            try:
                callback(exc)
            except Exception:
                log.exception("error in a tunnel-drop callback")

    def error(self, detail):
        """A TunnelError about opening this tunnel, naming server and backend."""
        return TunnelError(
            f"cannot open an SSH tunnel to {self.remote_host}:{self.remote_port} through "
            f"{self.server} ({self.backend} backend): {detail}")

    @abc.abstractmethod
    def close(self):
        """End the tunnel and everything it started; safe to call twice."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        state = "closed" if self.closed else ("dropped" if self.dropped else "open")
        return (f"<{type(self).__name__} 127.0.0.1:{self.local_port} -> {self.server} -> "
                f"{self.remote_host}:{self.remote_port} ({state})>")
