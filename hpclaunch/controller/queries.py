"""Answers to clients' questions about the cluster: queues, results, history.

Each function takes the hub and the request and sends the reply; they read the
registry and the task DB and change nothing but purged records. The hub runs them once
the engines' books of direct-lane work are in (books.py) unless ``answerable_now``.
"""

from ..protocol import json_frame
from ..protocol.direct import COPY_LIMIT
from .dbquery import compile_query, project
from .replies import error


def queue_status(hub, msg):
    c = msg.load_content()
    targets = c.get("targets")
    verbose = bool(c.get("verbose"))
    ids = hub.engines.ids() if targets is None else targets
    queues = {}
    for eid in ids:
        rec = hub.engines.get(eid) if isinstance(eid, int) else None
        if rec is None:
            hub.reply(msg, "queue_reply", error("EngineError", f"engine {eid!r} is not registered"))
            return
        direct = [m for m in rec.outstanding if m not in rec.balanced]
        tasks = [m for m in rec.outstanding if m in rec.balanced]
        if verbose:
            done = [r.msg_id for r in hub.db.records() if r.engine_id == eid and not r.pending]
            queues[str(eid)] = {"queue": direct, "tasks": tasks, "completed": done}
        else:
            queues[str(eid)] = {"queue": len(direct), "tasks": len(tasks), "completed": rec.completed}
    hub.reply(msg, "queue_reply", {"status": "ok", "queues": queues,
                                   "unassigned": hub.scheduler.unassigned()})


def results(hub, msg):
    """Stored replies, nested: each is the engine's own signed frames, verifiable by the client."""
    msg_ids = msg.load_content().get("msg_ids")
    if not isinstance(msg_ids, list) or not all(isinstance(m, str) for m in msg_ids):
        hub.reply(msg, "result_reply", error("ProtocolError", "result_request needs a list of msg_ids"))
        return
    unknown = [m for m in msg_ids if hub.db.get(m) is None]
    if unknown:
        hub.reply(msg, "result_reply", error(
            "KeyError", f"no task with msg_id {', '.join(unknown[:5])}"
                        f"{' ...' if len(unknown) > 5 else ''} (purged, culled, or never submitted)"))
        return
    pending, found, order, buffers = [], {}, [], []
    for msg_id in msg_ids:
        rec = hub.db.get(msg_id)
        if rec.pending:
            pending.append(msg_id)
            continue
        order.append(msg_id)
        found[msg_id] = {"nframes": len(rec.result), "record": rec.summary()}
        buffers.extend(rec.result)
    hub.reply(msg, "result_reply", {"status": "ok", "pending": pending, "results": found,
                                    "order": order}, buffers=buffers)


def purge(hub, msg):
    c = msg.load_content()
    msg_ids = c.get("msg_ids") or []
    engine_ids = c.get("engine_ids") or []
    if msg_ids == "all":
        drop = [r.msg_id for r in hub.db.records() if not r.pending]
    else:
        pending = [m for m in msg_ids if (r := hub.db.get(m)) is not None and r.pending]
        if pending:
            hub.reply(msg, "purge_reply", error(
                "ValueError", f"cannot purge tasks still pending: {', '.join(pending[:5])}"))
            return
        drop = list(msg_ids)
        engines = set(engine_ids)
        drop += [r.msg_id for r in hub.db.records() if r.engine_id in engines and not r.pending]
    hub.db.drop(drop)
    hub.reply(msg, "purge_reply", {"status": "ok", "purged": len(drop)})


def history(hub, msg):
    hub.reply(msg, "history_reply", {"status": "ok", "history": hub.db.msg_ids()})


def db_query(hub, msg):
    c = msg.load_content()
    try:
        matches = compile_query(c.get("query", {}))
        keys = c.get("keys")
        records = [project(summary, keys) for summary in hub.db.find(matches)]
    except ValueError as e:
        hub.reply(msg, "db_reply", error("ValueError", str(e)))
        return
    hub.reply(msg, "db_reply", {"status": "ok", "records": records})


def resubmit(hub, msg):
    """Run finished tasks again: the same request under a new msg_id, for the asker."""
    msg_ids = msg.load_content().get("msg_ids")
    if not isinstance(msg_ids, list) or not all(isinstance(m, str) for m in msg_ids):
        hub.reply(msg, "resubmit_reply", error("ProtocolError", "resubmit_request needs msg_ids"))
        return
    records = [hub.db.get(m) for m in msg_ids]
    problems = [f"{m} is unknown" for m, r in zip(msg_ids, records) if r is None]
    problems += [f"{m} is still pending" for m, r in zip(msg_ids, records) if r and r.pending]
    problems += [f"{m} has no stored request (a request sent on the direct lane with over "
                 f"{COPY_LIMIT >> 20} MiB of buffers is not copied to the controller)"
                 for m, r in zip(msg_ids, records) if r and not r.pending and not r.request]
    if problems:
        hub.reply(msg, "resubmit_reply", error("ValueError", "cannot resubmit: " + "; ".join(problems)))
        return
    renewed = [_renewed_request(hub, old, msg) for old in records]
    renamed = {old.msg_id: new.header["msg_id"] for old, new in zip(records, renewed)}
    # the reply goes first, so the client knows the new ids before any of them can fail
    hub.reply(msg, "resubmit_reply", {"status": "ok", "resubmitted": renamed})
    for new in renewed:
        hub.record(new, None)
        hub.scheduler.submit(new)


def _renewed_request(hub, old, asker):
    """The stored request with a fresh header (new msg_id, the asker's session), re-signed by
    the controller; content and buffers are reused as stored. Placement is left to the
    task scheduler, so ``metadata.engine`` is dropped."""
    _sig, _header, parent, metadata, content, *buffers = old.request
    header = hub.session.header(old.msg_type)
    header["session"] = asker.header["session"]
    md = hub.session.unpack_signed([], old.request, check_replay=False).metadata
    md.pop("engine", None)
    body = [json_frame(header), parent, json_frame(md), content, *buffers]
    signed = [hub.session.sign(body), *body]
    return hub.session.unpack_signed(asker.idents, signed, check_replay=False, content=False)


def answerable_now(hub, msg):
    """True if no engine's books can change the answer: a result_request for tasks that
    are all finished (e.g. other clients' results, polled while they run)."""
    if msg.msg_type != "result_request":
        return False
    msg_ids = msg.load_content().get("msg_ids")
    if not isinstance(msg_ids, list):
        return True   # answered at once with the error
    return all(isinstance(m, str) and (r := hub.db.get(m)) is not None and not r.pending
               for m in msg_ids)


HANDLERS = {
    "db_request": db_query,
    "resubmit_request": resubmit,
    "queue_request": queue_status,
    "result_request": results,
    "purge_request": purge,
    "history_request": history,
}
