"""The heartbeat: a C-level echo device, plus a window on it for the main thread.

``zmq.proxy_steerable(heart, heart, capture, control)`` runs in a daemon thread:
every ping from the controller is echoed back inside libzmq without the GIL,
so an engine busy in a long task still answers. The proxy copies each ping to
an inproc ``capture`` pipe; the main thread drains the other end to learn that
the controller is alive. The control pipe lets us stop the device cleanly.
"""

import threading
import uuid

import zmq

from ..protocol import has_message, make_curve_client

from .logs import logger


class Heart:
    """Owns the heart socket (through its thread) and the main thread's ``pulses`` end."""

    def __init__(self, context, url, identity, curve=None):
        self.identity = identity
        tag = uuid.uuid4().hex
        self.pulses = context.socket(zmq.PULL)
        self._configure(self.pulses)
        self.pulses.bind(f"inproc://heart-capture-{tag}")
        self._steer = context.socket(zmq.PAIR)
        self._steer.bind(f"inproc://heart-control-{tag}")

        heart = context.socket(zmq.DEALER)
        self._configure(heart)
        heart.setsockopt(zmq.IDENTITY, identity.encode())
        make_curve_client(heart, curve)
        heart.connect(url)
        capture = context.socket(zmq.PUSH)
        # unbounded: a full capture pipe would block the device and stop the echo
        self._configure(capture)
        capture.connect(f"inproc://heart-capture-{tag}")
        control = context.socket(zmq.PAIR)
        control.connect(f"inproc://heart-control-{tag}")
        self._device_sockets = (heart, capture, control)
        self._thread = threading.Thread(
            target=self._run, args=self._device_sockets, name="heart", daemon=True)

    @staticmethod
    def _configure(sock):
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.setsockopt(zmq.LINGER, 0)

    def start(self):
        self._thread.start()

    def _run(self, heart, capture, control):
        try:
            zmq.proxy_steerable(heart, heart, capture, control)
        except zmq.ContextTerminated:
            pass
        except zmq.ZMQError as e:
            logger.error("heartbeat device stopped: %s", e)
        finally:
            for sock in (heart, capture, control):
                sock.close(linger=0)

    def drain(self):
        """Consume every captured ping; returns how many arrived since last time."""
        count = 0
        while has_message(self.pulses):
            self.pulses.recv_multipart(zmq.NOBLOCK)
            count += 1
        return count

    def stop(self, timeout=2.0):
        """Stop the device and close every heart socket; False if the device did not stop
        (then its sockets stay open and the context must not be terminated)."""
        stopped = True
        if self._thread.is_alive():
            self._steer.send(b"TERMINATE")
            self._thread.join(timeout)
            stopped = not self._thread.is_alive()
        elif self._thread.ident is None:  # never started: the device sockets are still ours
            for sock in self._device_sockets:
                sock.close(linger=0)
        self._steer.close(linger=0)
        self.pulses.close(linger=0)
        return stopped
