"""What the engine does with each work request: apply, execute, push, pull, clear.

No sockets here: the kernel turns request buffers into reply buffers and
raises on failure, so its logic is testable alone and the message loop stays
about messages. Errors become reply content through :func:`error_content`.
"""

import ast
import linecache
import os
import sys
import traceback

from ..error import SerializationError
from ..protocol import deserialize, serialize, unpack_apply
from .namespace import main_module, new_namespace, rebind_call, rebind_values

#: Frames from files under this directory are hpclaunch's own and trimmed from tracebacks.
_HPCLAUNCH_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
#: Pseudo file name of executed code ("<execute-N>").
CELL_PREFIX = "<execute-"
#: How many executed cells keep their source for tracebacks.
KEPT_SOURCES = 200


class Kernel:
    """One persistent namespace and the operations that run in it."""

    def __init__(self, install_main=False):
        self.module = main_module()
        self.namespace = self.module.__dict__
        self._cell = 0
        if install_main:
            # `import __main__` in user code then sees the engine namespace
            sys.modules["__main__"] = self.module

    def apply(self, buffers):
        """Run ``f(*args, **kwargs)`` from ``pack_apply`` buffers; returns ``serialize(result)``."""
        if not buffers:
            raise SerializationError("apply_request carries no buffers: expected pack_apply(f, args, kwargs)")
        f, args, kwargs = unpack_apply(buffers)
        if not callable(f):
            raise TypeError(f"apply_request's function is a {type(f).__name__}, which is not callable")
        f, args, kwargs = rebind_call(f, args, kwargs, self.namespace)
        result = f(*args, **kwargs)
        try:
            return serialize(result)
        except SerializationError as e:
            name = getattr(f, "__qualname__", None) or repr(f)
            raise SerializationError(
                f"the result of {name}() cannot be sent back to the client: {e}. "
                "Return a picklable value (or keep the object on the engine and pull a summary)"
            ) from None

    def execute(self, code, silent=False):
        """Run source code in the namespace. Unless ``silent``, a final bare
        expression's repr is printed, as an interactive shell would show it."""
        if not isinstance(code, str):
            raise TypeError(f"execute_request 'code' must be a string, not {type(code).__name__}")
        filename = self._register_source(code)
        tree = ast.parse(code, filename, "exec")
        last = None
        if not silent and tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        exec(compile(tree, filename, "exec"), self.namespace)
        if last is not None:
            value = eval(compile(last, filename, "eval"), self.namespace)
            if value is not None:
                self.namespace["_"] = value
                print(repr(value))

    def _register_source(self, code):
        """Put the cell's source in linecache so tracebacks show the offending line
        (keeping only the last few cells, so a long-lived engine does not grow)."""
        self._cell += 1
        filename = f"{CELL_PREFIX}{self._cell}>"
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        linecache.cache.pop(f"{CELL_PREFIX}{self._cell - KEPT_SOURCES}>", None)
        return filename

    def push(self, buffers):
        """Update the namespace from ``serialize(dict)`` buffers."""
        if not buffers:
            raise SerializationError("push_request carries no buffers: expected serialize(dict)")
        values = deserialize(buffers)
        if not isinstance(values, dict):
            raise TypeError(f"push_request must carry a dict of names, got {type(values).__name__}")
        bad = [k for k in values if not isinstance(k, str) or not k.isidentifier()]
        if bad:
            raise ValueError(f"push_request names must be identifiers; got {bad[:5]!r}")
        self.namespace.update(rebind_values(values, self.namespace))

    def pull(self, names):
        """``serialize(tuple of values)``; a missing name raises NameError naming it."""
        if isinstance(names, str):
            names = [names]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise TypeError("pull_request 'names' must be a list of strings")
        missing = [n for n in names if n not in self.namespace]
        if missing:
            raise NameError(f"name {missing[0]!r} is not defined on this engine"
                            + (f" (also missing: {', '.join(missing[1:])})" if len(missing) > 1 else ""))
        values = tuple(self.namespace[n] for n in names)
        try:
            return serialize(values)
        except SerializationError as e:
            raise SerializationError(f"cannot pull {', '.join(names)}: {e}") from None

    def clear(self):
        """Empty the namespace in place (rebound functions keep pointing at it)."""
        new_namespace(self.namespace)


def error_content(exc, engine_id):
    """Reply content for an exception raised while serving a request."""
    return {
        "status": "error",
        "ename": type(exc).__name__,
        "evalue": str(exc),
        "traceback": format_user_traceback(exc),
        "engine_info": {"engine_id": engine_id},
    }


def format_user_traceback(exc):
    """The formatted traceback without hpclaunch's own frames.

    The user wants to see their code, not the engine's dispatch machinery; a
    traceback made only of our frames (e.g. a deserialization failure) is kept
    whole for debugging. A syntax error in executed code needs no frames at all."""
    report = traceback.TracebackException.from_exception(exc)
    if isinstance(exc, SyntaxError) and str(exc.filename).startswith(CELL_PREFIX):
        report.stack = traceback.StackSummary()
    else:
        user = [f for f in report.stack if not f.filename.startswith(_HPCLAUNCH_DIR)]
        if user:
            report.stack = traceback.StackSummary.from_list(user)
    return "".join(report.format())
