"""The paramiko backend: a loopback listener whose connections become ``direct-tcpip``
channels to the controller, bridged by threads (for Windows or machines without ssh).

One thread accepts; each connection (a client has two, an engine three) gets one thread
that moves bytes both ways with select(); a watcher reports a dead SSH transport.
"""

import select
import socket
import threading

import paramiko

from . import paramiko_session
from .base import Tunnel, free_local_port, log

CHUNK = 256 * 1024


class ParamikoTunnel(Tunnel):
    backend = "paramiko"

    def __init__(self, server, remote_host, remote_port, sshkey=None, timeout=20.0):
        super().__init__(server, remote_host, remote_port)
        self.client = paramiko_session.connect(server, sshkey, timeout, describe=self.error)
        self.transport = self.client.get_transport()
        self.transport.set_keepalive(15)
        self._stopping = threading.Event()
        self._connections = set()
        try:
            self.listener = socket.socket()
            self.listener.bind(("127.0.0.1", 0))
            self.listener.listen(16)
            self.local_port = self.listener.getsockname()[1]
            self._check_remote()
        except BaseException:
            self.client.close()
            raise
        for target, name in ((self._accept_loop, "accept"), (self._watch, "watch")):
            threading.Thread(target=target, name=f"hpclaunch-paramiko-{name}-{self.local_port}",
                             daemon=True).start()
        log.info("paramiko tunnel 127.0.0.1:%d -> %s -> %s:%d", self.local_port, server,
                 remote_host, remote_port)

    def _check_remote(self):
        """Fail now, not at the first message, if the server cannot reach the controller."""
        try:
            channel = self._open_channel(("127.0.0.1", free_local_port()))
        except paramiko.ChannelException as e:
            raise self.error(
                f"the SSH server cannot connect to {self.remote_host}:{self.remote_port} "
                f"({e}): is the controller running there?") from None
        except paramiko.SSHException as e:
            raise self.error(str(e)) from None
        channel.close()

    def _open_channel(self, origin):
        return self.transport.open_channel(
            "direct-tcpip", (self.remote_host, self.remote_port), origin,
            window_size=paramiko_session.WINDOW_SIZE, timeout=20)

    def _accept_loop(self):
        # a timeout, because closing a listener does not wake a thread blocked in accept()
        self.listener.settimeout(0.5)
        while not self._stopping.is_set():
            try:
                conn, origin = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return  # the listener was closed
            threading.Thread(target=self._bridge, args=(conn, origin), daemon=True,
                             name=f"hpclaunch-paramiko-bridge-{origin[1]}").start()

    def _bridge(self, conn, origin):
        try:
            channel = self._open_channel(origin)
        except (paramiko.SSHException, OSError, EOFError) as e:
            log.warning("tunnel through %s: cannot open a channel to %s:%d (%s)", self.server,
                        self.remote_host, self.remote_port, e)
            conn.close()
            return
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._connections.add(conn)
        try:
            self._pump(conn, channel)
        except (OSError, EOFError, paramiko.SSHException):
            pass  # one side closed: the other is closed below
        finally:
            with self._lock:
                self._connections.discard(conn)
            try:
                channel.close()
            except (OSError, EOFError, paramiko.SSHException):
                pass  # the SSH connection is gone already
            conn.close()

    def _pump(self, conn, channel):
        while not self._stopping.is_set():
            ready, _, _ = select.select([conn, channel], [], [], 1.0)
            if conn in ready:
                data = conn.recv(CHUNK)
                if not data:
                    return
                channel.sendall(data)
            if channel in ready:
                data = channel.recv(CHUNK)
                if not data:
                    return
                conn.sendall(data)

    def _watch(self):
        while not self._stopping.wait(0.5):
            if not self.transport.is_active():
                self._report_drop("the SSH connection closed")
                return

    @property
    def alive(self):
        return not self.closed and self.transport.is_active()

    def close(self):
        with self._lock:
            if self.closed:
                return
            self.closed = True
            connections = list(self._connections)
        self._stopping.set()
        self.listener.close()
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.client.close()
