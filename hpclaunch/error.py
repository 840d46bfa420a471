"""Exceptions shared by every part of hpclaunch.

A leaf module: it imports nothing from hpclaunch, so the protocol, controller,
engine and client can all raise and recognise the same errors without importing
each other. Names follow ipyparallel's ``error`` module so user code ports.
"""


class HpclaunchError(Exception):
    """Base class of every hpclaunch error."""


class SignatureError(HpclaunchError):
    """A message's HMAC did not verify: wrong key, tampering, or a replay."""


class ProtocolError(HpclaunchError):
    """A message that is not well formed (missing frames, bad JSON, unknown type)."""


class SerializationError(HpclaunchError, TypeError):
    """An object could not be pickled (or unpickled); the message names it."""


class ConnectionFileError(HpclaunchError):
    """A connection file is missing, unreadable, malformed or too permissive."""


class NoEnginesRegistered(HpclaunchError):
    """An operation needs engines and the controller has none."""


class TimeoutError(HpclaunchError, TimeoutError):  # noqa: A001 - ipyparallel's name
    """Waiting for a result, engines or the controller took too long."""


class EngineError(HpclaunchError):
    """The engine running a task died (or left) before replying."""


class EngineDraining(EngineError):
    """The engine is draining before its batch job's walltime ends: it finishes its running
    task and takes no new ones, so a task sent to it directly did not run."""


class TaskAborted(HpclaunchError):
    """A queued task was aborted before it ran."""


class UnmetDependency(HpclaunchError):
    """Raised on an engine by a functional dependency (``@require``/``@depend``) that the
    engine does not meet; the scheduler then tries the task elsewhere."""


class ImpossibleDependency(UnmetDependency):
    """A task's dependencies can never be met (unknown ids, failed dependencies,
    follow targets on different engines, every engine refused it)."""


class DependencyTimeout(ImpossibleDependency):
    """A task's dependencies were not met within its ``timeout``."""


class TaskTimeout(HpclaunchError):
    """A load-balanced task was not placed on an engine within its ``timeout``."""


class ResultReleased(HpclaunchError):
    """A big result asked for again after the program let go of it (client/results.py)."""


class RemoteError(HpclaunchError):
    """An exception raised on an engine, carried back with its type and traceback."""

    def __init__(self, ename, evalue, traceback="", engine_info=None):
        super().__init__(ename, evalue)
        self.ename = ename
        self.evalue = evalue
        self.traceback = traceback or ""
        self.engine_info = engine_info or {}

    @property
    def engine_id(self):
        return self.engine_info.get("engine_id")

    def __str__(self):
        where = f"[engine {self.engine_id}] " if self.engine_id is not None else ""
        return f"{where}{self.ename}: {self.evalue}"

    def render_traceback(self):
        return self.traceback or str(self)

    def print_traceback(self):
        print(self.render_traceback())


class CompositeError(RemoteError):
    """Several tasks failed; ``elist`` holds each RemoteError in submission order."""

    def __init__(self, message, elist):
        self.elist = list(elist)
        super().__init__("CompositeError", message)
        self.message = message

    def __str__(self):
        lines = [f"{self.message}: {len(self.elist)} failed"]
        lines += [f"  {e}" for e in self.elist]
        return "\n".join(lines)

    def render_traceback(self):
        # EngineError/TaskAborted entries have no traceback: show their message
        return "\n".join(e.render_traceback() if hasattr(e, "render_traceback") else
                         f"{type(e).__name__}: {e}" for e in self.elist)

    def raise_exception(self, index=0):
        raise self.elist[index]


def wrap_exception(content, engine_info=None):
    """Turn an error reply's content into the matching local exception."""
    ename = content.get("ename", "RemoteError")
    evalue = content.get("evalue", "")
    info = dict(engine_info or {}, **content.get("engine_info", {}))
    if ename == "EngineError":
        return EngineError(evalue)
    if ename == "EngineDraining":
        return EngineDraining(evalue)
    if ename == "TaskAborted":
        return TaskAborted(evalue)
    if ename in _SCHEDULER_ERRORS:
        return _SCHEDULER_ERRORS[ename](evalue)
    return RemoteError(ename, evalue, content.get("traceback", ""), info)


_SCHEDULER_ERRORS = {cls.__name__: cls for cls in
                     (ImpossibleDependency, DependencyTimeout, TaskTimeout)}


class TunnelError(HpclaunchError):
    """An SSH tunnel to the controller could not be opened, or dropped (names the SSH server
    and the backend; the controller keeps results, so a new Client can fetch them)."""
