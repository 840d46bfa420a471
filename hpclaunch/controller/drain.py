"""Engines that drain before their batch job's walltime ends.

An engine sends ``drain_request {id, drain_at, running}`` on its main socket. From then
on the hub sends it no load-balanced task and answers direct work for it itself (also
work its books note later, see books.py, unless the engine said it was running it). Every
task it holds but did not start (all but ``running``) is taken back: load-balanced ones
go back to the task scheduler as if never placed (no retry used, the engine not held
against them), direct ones get an ``EngineDraining`` error. The engine's own replies to
those tasks arrive later and are dropped, since they are no longer outstanding. Replies
and the drain_request share the engine's socket, so the hub sees them in sending order.
"""

import logging
import time

from .replies import error

log = logging.getLogger("hpclaunch.controller")

#: How many departed engines' reasons are kept, to explain a request that names one.
GONE_MEMORY = 10000


def drain_time_text(drain_at):
    if not isinstance(drain_at, (int, float)):
        return "unknown"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(drain_at))


def parse_drain_request(content, rec):
    """``(drain_at, running)`` of a well-formed drain_request from ``rec``'s engine;
    raises ValueError saying what is wrong (the hub logs it and drops the message)."""
    if not isinstance(content, dict):
        raise ValueError("content is not an object")
    if content.get("id") != rec.id:
        raise ValueError(f"id {content.get('id')!r} is not the sender's engine id {rec.id}")
    drain_at = content.get("drain_at")
    if drain_at is not None and (not isinstance(drain_at, (int, float))
                                 or isinstance(drain_at, bool)):
        raise ValueError(f"drain_at {drain_at!r} is not epoch seconds")
    running = content.get("running", [])
    if not isinstance(running, list) or not all(isinstance(m, str) for m in running) \
            or len(running) > max(1, len(rec.outstanding)):
        raise ValueError("running must be a list of the msg_ids the engine is still running")
    return drain_at, set(running)


def draining_error(rec, msg_type, msg_id):
    """The EngineDraining error for work that will not run on draining engine ``rec``."""
    return error("EngineDraining",
                 f"engine {rec.id} ({rec.hostname} pid {rec.pid}) is draining before its batch "
                 f"job's walltime ends (drain time {drain_time_text(rec.draining)}): it "
                 f"finishes its running task and takes no new ones, so {msg_type} {msg_id} "
                 "did not run; send it to another engine", engine_id=rec.id)


def start_draining(hub, rec, drain_at, running, queued_types):
    """Mark ``rec`` draining and take back every task of ``queued_types`` it did not start."""
    rec.draining = drain_at if drain_at is not None else time.time()
    rec.running_at_drain = running
    hub.scheduler.engine_draining(rec)
    given_back, refused = [], 0
    for msg_id, header in list(rec.outstanding.items()):
        if msg_id in running or header["msg_type"] not in queued_types:
            continue  # it finishes here; control requests are still served
        del rec.outstanding[msg_id]
        if msg_id in rec.balanced:
            rec.balanced.discard(msg_id)
            given_back.append(msg_id)
        else:
            hub.answer(header, draining_error(rec, header["msg_type"], msg_id), rec.id)
            refused += 1
    hub.scheduler.give_back(given_back)
    log.info("engine %d (%s pid %s) is draining (drain time %s): %d task(s) still running "
             "there, %d load-balanced task(s) given back to the scheduler, %d direct "
             "task(s) refused", rec.id, rec.hostname, rec.pid, drain_time_text(rec.draining),
             len(running & set(rec.outstanding)), len(given_back), refused)


def leaving_reason(rec):
    """Why an engine that unregistered left (the log line and the notification say it)."""
    if rec.draining is None:
        return "it unregistered (the engine process exited)"
    return (f"it drained before its batch job's walltime ends (drain time "
            f"{drain_time_text(rec.draining)}) and exited")


class DepartedEngines:
    """Why engines left, so a request naming one gets a reason, not just 'not registered'."""

    def __init__(self, size=GONE_MEMORY):
        self._reasons = {}
        self._size = size

    def add(self, eid, reason):
        self._reasons[eid] = reason
        while len(self._reasons) > self._size:
            del self._reasons[next(iter(self._reasons))]

    def explain(self, eid):
        reason = self._reasons.get(eid) if isinstance(eid, int) else None
        return f": it left ({reason})" if reason else ""
