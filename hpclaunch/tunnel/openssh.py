"""The OpenSSH backend: ``ssh -N -L 127.0.0.1:LPORT:HOST:PORT`` as a child process.

The user's own ssh config, agent, ProxyJump and ControlMaster apply, because it is their
ssh. ExitOnForwardFailure makes a failed forward an exit (not a silent tunnel that leads
nowhere); ServerAlive makes a dead network an exit too, which the watcher reports.
"""

import atexit
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref

from .base import Tunnel, free_local_port, interactive, log, ssh_config_file

#: stderr phrases meaning "the local port was taken meanwhile": pick another one.
_PORT_TAKEN = ("Address already in use", "cannot listen to port",
               "Could not request local forwarding")

#: Tunnels still open, closed at interpreter exit so no ssh process outlives its owner even
#: when close() was never called (an ssh in its own session gets no hangup from us).
_open_tunnels = weakref.WeakSet()


@atexit.register
def _close_open_tunnels():
    for tunnel in list(_open_tunnels):
        tunnel.close()


class OpenSSHTunnel(Tunnel):
    backend = "openssh"

    def __init__(self, server, remote_host, remote_port, sshkey=None, timeout=20.0, attempts=3):
        super().__init__(server, remote_host, remote_port)
        self.sshkey = sshkey
        self.interactive = interactive()
        self.process = None
        self._stderr = tempfile.TemporaryFile(prefix="hpclaunch-ssh-")
        # a person may need a while to type a password
        wait = max(timeout, 120.0) if self.interactive else timeout
        try:
            for attempt in range(attempts):
                self.local_port = free_local_port()
                self.process = self._spawn()
                if self._wait_ready(wait):
                    break
                detail = self._stderr_tail()
                self._reap()
                if attempt + 1 < attempts and any(p in detail for p in _PORT_TAKEN):
                    continue
                raise self.error(detail or f"ssh exited with status {self.process.returncode}")
        except BaseException:
            self._reap()
            self._stderr.close()
            self.closed = True
            raise
        _open_tunnels.add(self)
        threading.Thread(target=self._watch, name=f"hpclaunch-ssh-watch-{self.local_port}",
                         daemon=True).start()
        log.info("OpenSSH tunnel 127.0.0.1:%d -> %s -> %s:%d (pid %d)", self.local_port,
                 server, remote_host, remote_port, self.process.pid)

    def command(self):
        """The ssh command line (the key is a file path; its content never appears)."""
        forward = f"127.0.0.1:{self.local_port}:{self.remote_host}:{self.remote_port}"
        cmd = ["ssh", "-N", "-L", forward,
               "-o", "ExitOnForwardFailure=yes", "-o", "ServerAliveInterval=15",
               "-o", "ServerAliveCountMax=3"]
        if not self.interactive:
            cmd += ["-o", "BatchMode=yes"]
        config = ssh_config_file()
        if config:
            cmd += ["-F", config]
        if self.sshkey:
            cmd += ["-i", os.path.expanduser(self.sshkey)]
        if self.server.port:
            cmd += ["-p", str(self.server.port)]
        cmd.append(self.server.destination)
        return cmd

    def _spawn(self):
        self._stderr.seek(0)
        self._stderr.truncate()
        if self.interactive:
            # prompts need the terminal, so ssh stays in our session; Ctrl-C in the user's
            # Python must not kill the tunnel, so ssh ignores SIGINT (POSIX only)
            ignore_sigint = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) \
                if os.name == "posix" else None
            return subprocess.Popen(self.command(), stdin=None, stdout=subprocess.DEVNULL,
                                    stderr=self._stderr, preexec_fn=ignore_sigint)
        return subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=self._stderr,
                                start_new_session=True)

    def _wait_ready(self, timeout):
        """True once the local end accepts connections; False if ssh exited first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.local_port), timeout=0.5):
                    return True
            except OSError:
                time.sleep(0.05)
        self._reap()
        raise self.error(f"ssh did not open the forward within {timeout:g} s"
                         + (f" ({self._stderr_tail()})" if self._stderr_tail() else ""))

    def _stderr_tail(self, limit=600):
        try:
            self._stderr.seek(0)
            text = self._stderr.read().decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return ""
        return text[-limit:].replace("\r", "")

    def _watch(self):
        code = self.process.wait()
        if not self.closed:
            detail = self._stderr_tail() or "no message"
            self._report_drop(f"ssh (pid {self.process.pid}) exited with status {code}: {detail}")

    @property
    def alive(self):
        return not self.closed and self.process is not None and self.process.poll() is None

    def _reap(self):
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(3)

    def close(self):
        with self._lock:
            if self.closed:
                return
            self.closed = True
        self._reap()
        self._stderr.close()
