"""Graph dependencies of load-balanced tasks (ipyparallel's ``Dependency`` rules).

On the wire a dependency is ``{"ids": [...], "all": bool, "success": bool,
"failure": bool}`` in the request metadata, under ``after`` (time: run after
these finished) or ``follow`` (location: run where these ran).
"""

MET, WAIT, IMPOSSIBLE = "met", "wait", "impossible"
FAILED = frozenset({"error", "aborted"})


class Dependency:
    __slots__ = ("ids", "all", "success", "failure")

    def __init__(self, ids, all=True, success=True, failure=False):  # noqa: A002 - wire name
        self.ids = list(dict.fromkeys(ids))
        self.all = all
        self.success = success
        self.failure = failure

    @classmethod
    def parse(cls, obj, name):
        """From request metadata; None for no dependency. Raises ValueError naming the problem."""
        if obj in (None, {}, []):
            return None
        if isinstance(obj, list):
            obj = {"ids": obj}
        if not isinstance(obj, dict) or not isinstance(obj.get("ids"), list):
            raise ValueError(f"{name} must be a list of msg_ids or {{ids, all, success, failure}}")
        if not all(isinstance(i, str) for i in obj["ids"]):
            raise ValueError(f"{name} holds something that is not a msg_id string")
        flags = {k: obj.get(k, d) for k, d in (("all", True), ("success", True), ("failure", False))}
        if not isinstance(flags["all"], bool) or not isinstance(flags["success"], bool) \
                or not isinstance(flags["failure"], bool):
            raise ValueError(f"{name}: all, success and failure must be booleans")
        if not flags["success"] and not flags["failure"]:
            raise ValueError(f"{name}: success=False and failure=False can never be met")
        return cls(obj["ids"], **flags) if obj["ids"] else None

    def state(self, status_of):
        """MET, WAIT or IMPOSSIBLE, with a reason for IMPOSSIBLE.

        ``status_of(msg_id)`` is "ok", "error", "aborted", "pending" or None (unknown)."""
        statuses = {i: status_of(i) for i in self.ids}
        unknown = [i for i, s in statuses.items() if s is None]
        if unknown:
            return IMPOSSIBLE, f"depends on unknown msg_id(s) {', '.join(unknown[:3])}"
        ok = {i for i, s in statuses.items() if s == "ok"}
        failed = {i for i, s in statuses.items() if s in FAILED}
        good = (ok if self.success else set()) | (failed if self.failure else set())
        bad = (ok if not self.success else set()) | (failed if not self.failure else set())
        ids = set(self.ids)
        if (ids <= good) if self.all else bool(ids & good):
            return MET, ""
        if bool(bad) if self.all else ids <= bad:
            what = "failed" if bad & failed else "succeeded"
            return IMPOSSIBLE, (f"dependency {sorted(bad)[0]} {what}, and the task asked for "
                                f"success={self.success}, failure={self.failure}")
        return WAIT, ""

    def locations(self, engine_of):
        """For ``follow``: the engines the task may run on, or None if not yet known.

        Raises ValueError when ``all=True`` dependencies ran on different engines."""
        engines = {engine_of(i) for i in self.ids} - {None}
        if self.all and len(engines) > 1:
            raise ValueError(f"follow dependencies ran on different engines {sorted(engines)}; "
                             "with all=True the task cannot follow all of them")
        return engines or None
