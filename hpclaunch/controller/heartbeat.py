"""Heartbeat monitor: pings every engine's echo socket and notices silence.

Pings are ``[heart_ident, HEARTBEAT, nonce]``; the engine's C-level device
echoes them untouched. Only a pong carrying the current nonce counts, so a late
echo of an old ping cannot keep a dead engine alive.
"""

import itertools

from ..protocol import HEARTBEAT


class HeartMonitor:
    def __init__(self, period=2.0, liveness=3):
        if period <= 0:
            raise ValueError(f"heartbeat period must be > 0, got {period}")
        if liveness < 1:
            raise ValueError(f"heartbeat liveness must be >= 1, got {liveness}")
        self.period = period
        self.liveness = liveness
        self._nonces = itertools.count(1)
        self._nonce = b"0"
        self._hearts = {}      # heart ident -> engine id
        self._missed = {}      # engine id -> consecutive missed pings
        self._answered = set()  # engine ids that answered the current ping

    def add(self, eid, heart_ident):
        self._hearts[heart_ident] = eid
        self._missed[eid] = 0
        self._answered.add(eid)  # a fresh engine gets a full period before its first check

    def remove(self, eid):
        self._hearts = {h: e for h, e in self._hearts.items() if e != eid}
        self._missed.pop(eid, None)
        self._answered.discard(eid)

    def is_heart(self, ident):
        return ident in self._hearts

    def pong(self, heart_ident, nonce):
        eid = self._hearts.get(heart_ident)
        if eid is not None and nonce == self._nonce:
            self._answered.add(eid)

    def beat(self, socket):
        """Close the current round, send the next ping; returns ids declared dead."""
        dead = []
        for eid in list(self._missed):
            if eid in self._answered:
                self._missed[eid] = 0
            else:
                self._missed[eid] += 1
                if self._missed[eid] >= self.liveness:
                    dead.append(eid)
        self._answered = set()
        self._nonce = str(next(self._nonces)).encode()
        for heart in self._hearts:
            socket.send_multipart([heart, HEARTBEAT, self._nonce])
        return dead
