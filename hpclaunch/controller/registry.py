"""The engines a controller knows: ids, routing identities and unfinished work.

Ids are integers handed out in order and never reused within one controller's
life, so a result's ``engine_id`` always names one process.
"""

import time


class EngineRecord:
    """One registered engine and the requests it has not answered yet."""

    __slots__ = ("id", "uuid", "ident", "heart", "iopub", "hostname", "pid", "registered",
                 "info", "outstanding", "balanced", "completed", "draining", "running_at_drain",
                 "ledger", "ledger_up")

    def __init__(self, eid, uuid, ident, heart, iopub, hostname, pid, info):
        self.id = eid
        self.uuid = uuid
        self.ident = ident          # routing id of the engine's main socket
        self.heart = heart          # routing id of its heartbeat echo socket
        self.iopub = iopub
        self.hostname = hostname
        self.pid = pid
        self.info = info
        self.registered = time.time()
        self.outstanding = {}       # msg_id -> request header, in arrival order
        self.balanced = set()       # the outstanding msg_ids placed by the task scheduler
        self.completed = 0
        self.draining = None        # its drain time (epoch seconds) once it drains
        self.running_at_drain = ()  # msg_ids it was still running then (it finishes them)
        self.ledger = None          # routing id of its ledger socket (direct-lane books)
        self.ledger_up = False      # True once the ledger sent its first books

    def describe(self):
        return {"uuid": self.uuid, "hostname": self.hostname, "pid": self.pid,
                "registered": self.registered, **self.info}


class EngineRegistry:
    def __init__(self):
        self._by_id = {}
        self._by_uuid = {}
        self._next_id = 0
        self._used = set()

    def __len__(self):
        return len(self._by_id)

    def __contains__(self, eid):
        return eid in self._by_id

    def ids(self):
        return sorted(self._by_id)

    def get(self, eid):
        return self._by_id.get(eid)

    def by_uuid(self, uuid):
        return self._by_uuid.get(uuid)

    def records(self):
        return list(self._by_id.values())

    def register(self, uuid, ident, heart, iopub, hostname, pid, requested_id=None, info=None):
        """Add an engine; returns its record. Raises ValueError for an unusable requested id."""
        if requested_id is not None:
            if not isinstance(requested_id, int) or requested_id < 0:
                raise ValueError(f"requested id {requested_id!r} is not a non-negative integer")
            if requested_id in self._used:
                raise ValueError(f"engine id {requested_id} was already used in this cluster")
            eid = requested_id
        else:
            while self._next_id in self._used:
                self._next_id += 1
            eid = self._next_id
        self._used.add(eid)
        rec = EngineRecord(eid, uuid, ident, heart, iopub, hostname, pid, info or {})
        self._by_id[eid] = rec
        self._by_uuid[uuid] = rec
        return rec

    def remove(self, eid):
        rec = self._by_id.pop(eid, None)
        if rec is not None:
            self._by_uuid.pop(rec.uuid, None)
        return rec
