"""The client's end of the direct lane (see protocol/direct.py): a ROUTER connected to the
engines' direct ports, each addressed by the routing id its port announces.

A Client has two: one for user threads (under the send lock, read by the I/O thread) and
one for the SyncChannel's blocking calls. Each connects to an engine on first use and
waits for the handshake before the first send, so a task never goes to an engine on both
lanes at once (which could reorder them). An engine that cannot be reached in time is
marked relay-only for good and its work goes through the controller, as do engines that
announce no direct port and every engine of a tunnelled client.
"""

import ipaddress
import logging
import socket
import time

import zmq

from ..protocol.direct import direct_identity, url_host
from ..protocol.ratelimit import RateLimitedLog
from ..protocol.stream import Reassembler, send_message

#: How long the first send to newly connected engines may wait for their handshakes.
CONNECT_TIMEOUT = 2.0
_HOSTNAME = socket.gethostname()
_bad = RateLimitedLog(logging.getLogger("hpclaunch.client"))


def direct_url(info):
    """The engine's direct-lane URL if this process can use it, else None: a loopback URL
    is only this host's, so it counts only when the engine runs here."""
    direct = info.get("direct") if isinstance(info, dict) else None
    url = direct.get("url") if isinstance(direct, dict) else None
    if not isinstance(url, str) or not url.startswith("tcp://"):
        return None
    host = url_host(url)
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback and info.get("hostname") != _HOSTNAME:
        return None
    return url


class DirectLane:
    """One ROUTER to the engines. Not thread-safe: its owner (the send lock's holder, or the
    SyncChannel's borrower) is the only thread that sends; ``engines()`` returns the Inbox's
    current ``{id: info}`` (an engine that left is disconnected at the next connect)."""

    def __init__(self, context, curve, engines, session):
        self.socket = context.socket(zmq.ROUTER)
        # IMMEDIATE: no queue for an engine until its connection is up, so a send to one
        # that cannot be reached fails (EHOSTUNREACH, from ROUTER_MANDATORY) instead of waiting
        for opt, value in ((zmq.SNDHWM, 0), (zmq.RCVHWM, 0), (zmq.LINGER, 0),
                           (zmq.ROUTER_MANDATORY, 1), (zmq.IMMEDIATE, 1)):
            self.socket.setsockopt(opt, value)
        self._curve = curve
        self._engines = engines
        self._session = session
        self._connected = {}     # engine id -> (url, the routing id its port announces)
        self._unreachable = set()
        self._deadline = 0.0     # handshakes of fresh connections may take until then
        #: whoever reads ``socket`` passes what it reads through ``streams.feed`` (stream.py)
        self.streams = Reassembler(_bad.warning, session)

    def usable(self, eid):
        """True if work for ``eid`` should go on this lane (connecting to it if new)."""
        if eid in self._connected:
            return True
        if eid in self._unreachable:
            return False
        info = self._engines().get(eid)
        url = direct_url(info) if info is not None else None
        if url is None:
            self._unreachable.add(eid)
            return False
        self._prune()
        sock = self.socket
        if self._curve:
            public = (info.get("direct") or {}).get("curve_public")
            if not public:
                self._unreachable.add(eid)
                return False
            sock.curve_serverkey = public.encode("ascii")
            sock.curve_publickey = self._curve["client_public"].encode("ascii")
            sock.curve_secretkey = self._curve["client_secret"].encode("ascii")
        sock.connect(url)
        self._connected[eid] = (url, direct_identity(info.get("uuid")))
        self._deadline = time.monotonic() + CONNECT_TIMEOUT
        return True

    def send(self, eid, frames):
        """Send ``[DELIM, sig, ...]`` to engine ``eid`` (a None ``sig`` is made while sending,
        see stream.send_message); False if it cannot be reached (it is then relay-only: the
        caller sends through the controller instead)."""
        idents = [self._connected[eid][1]]
        while True:
            try:
                send_message(self.socket, idents, frames, self._session)
                return True
            except zmq.ZMQError as e:
                if e.errno != zmq.EHOSTUNREACH:
                    raise
                if time.monotonic() >= self._deadline:
                    self._give_up(eid)
                    return False
                time.sleep(0.0005)  # the handshake of a fresh connection is under way

    def _give_up(self, eid):
        connected = self._connected.pop(eid, None)
        self._unreachable.add(eid)
        if connected is not None:
            try:
                self.socket.disconnect(connected[0])
            except zmq.ZMQError:
                pass

    def _prune(self):
        """Stop reconnecting to engines that left."""
        engines = self._engines()
        for eid in [e for e in self._connected if e not in engines]:
            self._give_up(eid)

    def close(self):
        self.socket.close(linger=0)
