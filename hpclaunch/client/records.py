"""The controller's task records, seen from the client: results by msg_id (any client's),
history, purging, resubmission and database queries (docs/protocol.md, "Task database
queries"). A mixin of Client: every method is a hub query over the client's sockets.
"""

from .. import error
from .asyncresult import AsyncResult
from .inbox import new_metadata

#: Condition operators of a db_request query (docs/protocol.md).
QUERY_OPERATORS = frozenset({"$lt", "$gt", "$lte", "$gte", "$ne", "$in", "$nin"})


class TaskRecords:
    """get_result, resubmit, db_query, hub_history, purge_results (mixed into Client)."""

    def hub_history(self):
        """Every msg_id the controller has recorded, in submission order."""
        return list(self._hub_query("history_request", {}).content.get("history") or [])

    def purge_results(self, jobs=(), targets=()):
        """Forget completed results at the controller: by msg_id/AsyncResult, by engine, or
        ``jobs='all'``."""
        if not jobs and not targets:
            raise ValueError("purge_results needs jobs (msg_ids, AsyncResults or 'all') "
                             "and/or targets (engine ids)")
        msg_ids = "all" if jobs == "all" else self._msg_ids(jobs)
        engine_ids = self._build_targets(targets) if targets else []
        self._hub_query("purge_request", {"msg_ids": msg_ids, "engine_ids": engine_ids})

    def purge_local_results(self, jobs=(), targets=()):
        """Forget finished results kept in this client's ``results``/``metadata``."""
        inbox = self._inbox
        if jobs == "all":
            done = [m for m in inbox.results]
        else:
            done = [m for m in self._msg_ids(jobs) if m in inbox.results]
        if targets:
            engines = set(self._build_targets(targets))
            done += [m for m, md in list(inbox.metadata.items())
                     if md.get("engine_id") in engines and m in inbox.results]
        for msg_id in done:
            inbox.results.pop(msg_id, None)
            inbox.metadata.pop(msg_id, None)

    def get_result(self, indices_or_msg_ids=None, block=None):
        """An AsyncResult for earlier tasks, by msg_id (any client's) or index into history."""
        key = -1 if indices_or_msg_ids is None else indices_or_msg_ids
        single = isinstance(key, (int, str))
        msg_ids = [self.history[k] if isinstance(k, int) else k
                   for k in ([key] if single else self._msg_ids(key, allow_int=True))]
        ar = AsyncResult(self._inbox, msg_ids, fname="get_result", single=single)
        for msg_id in msg_ids:
            self._inbox.metadata.setdefault(msg_id, new_metadata(msg_id))
        to_fetch = self._inbox.follow(ar, msg_ids)
        if to_fetch:
            self._fetch(ar, to_fetch)
        if block:
            ar.wait()
        return ar

    def _fetch(self, ar, msg_ids):
        request = self._hub_request("result_request", {"msg_ids": msg_ids},
                                    on_ok=self._on_result_reply)

        def failed(future):
            exc = future.exception()
            if exc is not None:
                self._inbox.abandon(msg_ids, exc)
                ar._fail_remaining(exc)

        request.add_done_callback(failed)

    def _on_result_reply(self, msg):
        self._inbox.absorb_result_reply(msg)
        if self._inbox.hub_watch:
            self._io.wake()

    def _poll_hub(self):
        """I/O thread tick: ask again for other clients' results still pending."""
        if self._result_poll is not None and not self._result_poll.done():
            return
        watched = sorted(self._inbox.hub_watch)
        if not watched or self._closed:
            return
        self._result_poll = poll = self._hub_request(
            "result_request", {"msg_ids": watched}, on_ok=self._inbox.absorb_result_reply)

        def failed(future):
            # e.g. a watched task was purged meanwhile: its waiters get the error, not a hang
            exc = future.exception()
            if exc is not None:
                self._inbox.abandon(watched, exc)

        poll.add_done_callback(failed)


    def resubmit(self, indices_or_msg_ids=None, block=None):
        """Run finished tasks again (any client's, by msg_id or index into history); returns
        the AsyncResult of the new tasks, which the controller's scheduler places."""
        key = -1 if indices_or_msg_ids is None else indices_or_msg_ids
        single = isinstance(key, (int, str))
        msg_ids = self._msg_ids(key, allow_int=True)
        if not msg_ids:
            raise ValueError("resubmit needs at least one msg_id or AsyncResult")
        made = {}

        def on_ok(msg):
            # on the I/O thread, before any reply of the new tasks is handled
            renamed = msg.content.get("resubmitted")
            new_ids = [renamed.get(m) if isinstance(renamed, dict) else None for m in msg_ids]
            if not all(isinstance(m, str) for m in new_ids):
                raise error.ProtocolError(f"resubmit_reply does not name a new msg_id for each "
                                          f"of {msg_ids}: {renamed!r}")
            ar = AsyncResult(self._inbox, new_ids, fname="resubmit", single=single)
            self.history.extend(new_ids)
            self._inbox.adopt(ar, new_ids)
            made["ar"] = ar

        self._wait_hub(self._hub_request("resubmit_request", {"msg_ids": msg_ids}, on_ok=on_ok))
        ar = made["ar"]
        if block:
            ar.wait()
        return ar

    def db_query(self, query, keys=None):
        """Task records matching ``query`` (``{field: value}`` or ``{field: {"$lt": v}}``
        with $lt $gt $lte $gte $ne $in $nin), as dicts of ``keys`` (None: every field;
        msg_id is always included). Times are epoch floats."""
        if not isinstance(query, dict):
            raise TypeError(f"db_query needs a dict of field -> value or condition, "
                            f"not {type(query).__name__}")
        wire = {}
        for field, cond in query.items():
            if not isinstance(field, str):
                raise TypeError(f"db_query fields are strings, got {field!r}")
            if isinstance(cond, dict):
                unknown = sorted(set(cond) - QUERY_OPERATORS)
                if unknown:
                    raise ValueError(f"unknown operator(s) {unknown} for {field!r}; use "
                                     f"{', '.join(sorted(QUERY_OPERATORS))}")
                for op in ("$in", "$nin"):
                    if op in cond and not isinstance(cond[op], (list, tuple, set)):
                        raise TypeError(f"{op} for {field!r} needs a list of values")
                cond = {op: list(v) if isinstance(v, (tuple, set)) else v
                        for op, v in cond.items()}
            wire[field] = cond
        if isinstance(keys, str):
            keys = [keys]
        if keys is not None:
            keys = list(keys)
            if not all(isinstance(k, str) for k in keys):
                raise TypeError(f"db_query keys must be field names, got {keys!r}")
        reply = self._hub_query("db_request", {"query": wire, "keys": keys})
        return list(reply.content.get("records") or [])
