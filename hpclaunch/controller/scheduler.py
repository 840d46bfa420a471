"""The load-balanced task scheduler: picks an engine for each task the client
did not pin to one, honouring dependencies, retries, timeouts and a high-water
mark. It lives inside the hub's thread and sends through the hub, so the hub
always knows which engine holds which task (and what to do if that engine dies).
"""

import collections
import heapq
import logging
import time

from .dependencies import IMPOSSIBLE, WAIT, Dependency
from .replies import error
from .schemes import get_scheme

log = logging.getLogger("hpclaunch.controller")


class Job:
    """One load-balanced task: the request plus what constrains its placement."""

    __slots__ = ("msg", "msg_id", "after", "follow", "targets", "deadline", "retries",
                 "blacklist", "waiting_on", "state")

    def __init__(self, msg):
        md = msg.metadata
        self.msg = msg
        self.msg_id = msg.header["msg_id"]
        self.after = Dependency.parse(md.get("after"), "after")
        self.follow = Dependency.parse(md.get("follow"), "follow")
        targets = md.get("targets")
        if targets is not None and (not isinstance(targets, list)
                                    or not all(isinstance(t, int) for t in targets)):
            raise ValueError("targets must be a list of engine ids")
        self.targets = set(targets) if targets is not None else None
        timeout = md.get("timeout")
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout < 0):
            raise ValueError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
        self.deadline = time.monotonic() + timeout if timeout else None
        retries = md.get("retries", 0)
        if not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an integer >= 0, got {retries!r}")
        self.retries = retries
        self.blacklist = set()
        self.waiting_on = ()
        self.state = "new"      # waiting | ready | sent | done

    def __lt__(self, other):   # heap tie-break
        return self.msg_id < other.msg_id

    def allows(self, eid, follow_engines):
        if eid in self.blacklist:
            return False
        if self.targets is not None and eid not in self.targets:
            return False
        return follow_engines is None or eid in follow_engines


class TaskScheduler:
    def __init__(self, hub, scheme="leastload", hwm=0):
        self.hub = hub
        self.scheme_name = scheme
        self.choose = get_scheme(scheme)
        if not isinstance(hwm, int) or hwm < 0:
            raise ValueError(f"hwm must be an integer >= 0 (0: no limit), got {hwm!r}")
        self.hwm = hwm
        self.lru = []                                  # engine ids, least recently used first
        self.waiting = {}                              # msg_id -> Job whose dependencies are unmet
        self.dependents = collections.defaultdict(set)  # dep msg_id -> msg_ids waiting on it
        self.ready = collections.deque()               # Jobs ready to run, no engine free yet
        self.n_ready = 0                               # live entries in ready (others are done)
        self.in_flight = {}                            # msg_id -> Job sent to an engine
        self.deadlines = []                            # heap of (deadline, Job)

    # -- hub hooks ---------------------------------------------------------------
    def engine_added(self, rec):
        self.lru.insert(0, rec.id)
        self._dispatch_ready()

    def engine_removed(self, rec):
        self.lru = [e for e in self.lru if e != rec.id]
        registered = set(self.hub.engines.ids())
        for job in list(self.ready):
            why = self._why_unplaceable(job, registered) if job.state == "ready" else None
            if why:
                self._impossible(job, why)

    def engine_draining(self, rec):
        """A draining engine takes no more tasks (it stays registered until it leaves)."""
        self.lru = [e for e in self.lru if e != rec.id]

    def give_back(self, msg_ids):
        """Tasks a draining engine never started: placed again as if new (no retry used,
        the engine not held against them), ahead of tasks that were queued after them."""
        unplaced = []
        for msg_id in msg_ids:
            job = self.in_flight.pop(msg_id, None)
            if job is not None and not self._place(job):
                job.state = "ready"
                unplaced.append(job)
                rec = self.hub.db.get(msg_id)
                if rec is not None:
                    rec.engine_id = None  # waiting in the controller, on no engine
        self.ready.extendleft(reversed(unplaced))
        self.n_ready += len(unplaced)

    def unassigned(self):
        return len(self.waiting) + self.n_ready

    def submit(self, msg):
        try:
            job = Job(msg)
        except ValueError as e:
            self.fail(msg.header, error("ValueError", str(e)))
            return
        if job.deadline is not None:
            heapq.heappush(self.deadlines, (job.deadline, job))
        self._consider(job)

    def reroute(self, eid, msg_id, status, ename):
        """An engine answered (or died holding) a task. True: the scheduler sent it elsewhere,
        so the hub must swallow this answer; False: the answer stands."""
        job = self.in_flight.pop(msg_id, None)
        if job is None or status != "error":
            return False
        if ename == "UnmetDependency":
            job.blacklist.add(eid)
        elif job.retries > 0:
            job.retries -= 1
            job.blacklist.add(eid)
            log.info("task %s failed on engine %d (%s); retrying, %d retries left",
                     msg_id, eid, ename, job.retries)
        else:
            return False
        why = self._why_unplaceable(job, set(self.hub.engines.ids()))
        if why:
            self._impossible(job, why)
        else:
            self._place_or_queue(job)
        return True

    def done(self, msg_id):
        """A task's answer is final (recorded in the DB): wake what waited on it."""
        self.in_flight.pop(msg_id, None)
        for waiter in self.dependents.pop(msg_id, ()):
            job = self.waiting.get(waiter)
            if job is not None:
                del self.waiting[waiter]
                self._consider(job)
        self._dispatch_ready()

    def tick(self):
        """Fail tasks that were not placed before their timeout."""
        now = time.monotonic()
        while self.deadlines and self.deadlines[0][0] <= now:
            _, job = heapq.heappop(self.deadlines)
            if job.state == "waiting":
                self._give_up(job, "DependencyTimeout",
                              f"task {job.msg_id} timed out waiting for its dependencies")
            elif job.state == "ready":
                self._give_up(job, "TaskTimeout",
                              f"task {job.msg_id} timed out before an engine could take it")

    def next_deadline(self):
        while self.deadlines and self.deadlines[0][1].state not in ("waiting", "ready"):
            heapq.heappop(self.deadlines)
        return self.deadlines[0][0] if self.deadlines else None

    # -- placement ---------------------------------------------------------------
    def _status(self, msg_id):
        rec = self.hub.db.get(msg_id)
        return rec.status if rec is not None else None

    def _engine_of(self, msg_id):
        rec = self.hub.db.get(msg_id)
        return rec.engine_id if rec is not None and not rec.pending else None

    def _consider(self, job):
        for dep in (job.after, job.follow):
            if dep is None:
                continue
            state, why = dep.state(self._status)
            if state == IMPOSSIBLE:
                self._impossible(job, why)
                return
            if state == WAIT:
                job.waiting_on = dep.ids
                job.state = "waiting"
                self.waiting[job.msg_id] = job
                for dep_id in dep.ids:
                    self.dependents[dep_id].add(job.msg_id)
                return
        why = self._why_unplaceable(job, set(self.hub.engines.ids()))
        if why:
            self._impossible(job, why)
        else:
            self._place_or_queue(job)

    def _place_or_queue(self, job):
        if not self._place(job):
            job.state = "ready"
            self.ready.append(job)
            self.n_ready += 1

    def _follow_engines(self, job):
        return job.follow.locations(self._engine_of) if job.follow is not None else None

    def _why_unplaceable(self, job, registered):
        """Why no engine can ever run the job (engine ids are never reused), or None when
        it may run now, or once an engine frees up or registers."""
        try:
            follow = self._follow_engines(job)
        except ValueError as e:
            return str(e)
        pinned = job.targets if job.targets is not None else follow
        if pinned is not None:
            if not {e for e in pinned if job.allows(e, follow)} & registered:
                what = "targets" if job.targets is not None else "follow dependencies' engines"
                return (f"its {what} {sorted(pinned)} are not registered engines it may use "
                        f"(registered: {sorted(registered)}, refused or failed: {sorted(job.blacklist)})")
            return None
        if registered and not any(job.allows(e, follow) for e in registered):
            return f"every registered engine refused or failed it ({sorted(job.blacklist)})"
        return None

    def _place(self, job):
        """Send the job to an engine now if one may take it; False if it must wait."""
        try:
            follow = self._follow_engines(job)
        except ValueError as e:
            self._impossible(job, str(e))
            return True
        engines = self.hub.engines
        candidates, loads = [], []
        for eid in self.lru:
            if not job.allows(eid, follow):
                continue
            load = len(engines.get(eid).outstanding)
            if self.hwm and load >= self.hwm:
                continue
            candidates.append(eid)
            loads.append(load)
        if not candidates:
            return False
        eid = candidates[self.choose(loads)]
        self.lru.remove(eid)
        self.lru.append(eid)
        rec = self.hub.db.get(job.msg_id)
        if rec is not None:
            rec.engine_id = eid
        self.in_flight[job.msg_id] = job
        job.state = "sent"
        self.hub.send_to_engine(engines.get(eid), job.msg, balanced=True)
        return True

    def _dispatch_ready(self):
        """Place queued jobs, oldest first, while some engine has room."""
        skipped = collections.deque()
        while self.ready:
            job = self.ready.popleft()
            if job.state != "ready":
                continue  # failed or timed out while queued
            self.n_ready -= 1
            if not self._place(job):
                self.n_ready += 1
                skipped.append(job)
                if self.hwm and not self._any_room():
                    break
        skipped.extend(self.ready)
        self.ready = skipped

    def _any_room(self):
        engines = self.hub.engines
        return any(len(engines.get(e).outstanding) < self.hwm for e in self.lru)

    # -- failing -----------------------------------------------------------------
    def _impossible(self, job, why):
        self._give_up(job, "ImpossibleDependency", f"task {job.msg_id} can never run: {why}")

    def _give_up(self, job, ename, evalue):
        if job.state == "waiting":
            self.waiting.pop(job.msg_id, None)
            for dep_id in job.waiting_on:
                waiters = self.dependents.get(dep_id)
                if waiters is not None:
                    waiters.discard(job.msg_id)
                    if not waiters:
                        del self.dependents[dep_id]
        elif job.state == "ready":
            self.n_ready -= 1   # its stale deque entry is skipped later
        job.state = "done"
        self.fail(job.msg.header, error(ename, evalue))

    def fail(self, header, content):
        """Answer a task the scheduler gives up on; it counts as failed for dependents."""
        self.hub.answer(header, content, None)
        self.done(header["msg_id"])
