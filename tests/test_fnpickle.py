"""Reused function pickles (protocol/fnpickle.py): reused only while provably unchanged."""

import io
import math

import cloudpickle

import numpy as np
import pytest

from hpclaunch.protocol import fnpickle, pack_apply, unpack_apply


def main_function(source, **globals_):
    """A function defined in a fresh ``__main__``-like namespace: pickled by value, as a
    script's or a notebook's functions are."""
    namespace = {"__name__": "__main__", **globals_}
    exec(source, namespace)  # noqa: S102 - test fixture code
    return namespace["f"], namespace


def roundtrip(f, *args):
    g, a, k = unpack_apply(pack_apply(f, args))
    return g(*a, **k)


def test_a_plain_function_is_pickled_once_and_reused():
    f, _ = main_function("def f(x, y=2):\n    return float(np.sum(x)) * y * SCALE\n",
                         np=np, SCALE=3)
    first, second = fnpickle.reusable(f), fnpickle.reusable(f)
    assert isinstance(first, fnpickle.Pickled) and first.data is second.data
    assert roundtrip(f, np.arange(4)) == 36.0


@pytest.mark.parametrize("source, globals_", [
    ("def f():\n    return LIMIT\n", {"LIMIT": 1.5}),
    ("def f(x=-0.0):\n    return math.copysign(1, x)\n", {"math": math}),
    ("def f(*, k=(1, 'a')):\n    return k\n", {}),
])
def test_what_the_pickle_depends_on_is_checked_on_every_call(source, globals_):
    f, namespace = main_function(source, **globals_)
    before = roundtrip(f)
    if "LIMIT" in namespace:
        namespace["LIMIT"] = 2.5
        assert roundtrip(f) == 2.5 != before
    elif f.__defaults__:
        f.__defaults__ = (0.0,)          # == -0.0, yet another pickle
        assert roundtrip(f) == 1.0 != before
    else:
        f.__kwdefaults__ = {"k": (2, "b")}
        assert roundtrip(f) == (2, "b") != before


def test_rebinding_a_module_or_the_code_is_seen():
    f, namespace = main_function("def f():\n    return m.sqrt(4.0)\n", m=math)
    assert roundtrip(f) == 2.0
    namespace["m"] = np
    assert type(roundtrip(f)) is np.float64
    other, _ = main_function("def f():\n    return 'new code'\n")
    f.__code__ = other.__code__
    assert roundtrip(f) == "new code"


@pytest.mark.parametrize("source, globals_", [
    ("def f():\n    return ITEMS\n", {"ITEMS": [1, 2]}),              # a mutable global
    ("def f(x=[]):\n    return x\n", {}),                             # a mutable default
    ("def f(x: int):\n    return x\n", {}),                           # annotations
    ("def g():\n    n = 1\n    def f():\n        return n\n    return f\nf = g()\n", {}),  # closure
    ("def f():\n    return helper()\ndef helper():\n    return 1\n", {}),  # another __main__ function
])
def test_functions_whose_pickle_cannot_be_pinned_are_pickled_each_time(source, globals_):
    f, _ = main_function(source, **globals_)
    assert fnpickle.reusable(f) is f


def test_a_function_attribute_turns_reuse_off():
    f, _ = main_function("def f():\n    return 1\n")
    assert isinstance(fnpickle.reusable(f), fnpickle.Pickled)
    f.tag = "changed"
    assert fnpickle.reusable(f) is f


def test_an_engine_runs_the_function_as_it_is_now(rc):
    """(A changed global would not show: the engine keeps names it already has, as
    ipyparallel does; a changed default or body does.)"""
    f, _ = main_function("def f(x=1):\n    return x * 2\n")
    view = rc[rc.ids[0]]
    assert view.apply_sync(f) == 2
    f.__defaults__ = (5,)
    assert view.apply_sync(f) == 10
    f.__code__ = main_function("def f(x=1):\n    return -x\n")[0].__code__
    assert view.apply_sync(f) == -5


@pytest.mark.parametrize("args, kwargs", [
    ((), {}),
    ((1, "a", b"xy", None, 2.5, -0.0, 3j, True), {"k": [1, (2, "b")], "d": {"x": 1}}),
])
def test_plain_calls_skip_cloudpickle_yet_write_the_same_bytes(args, kwargs):
    f, _ = main_function("def f(*a, **k):\n    return a, k\n")
    frames = pack_apply(f, args, kwargs)
    out = io.BytesIO()
    cloudpickle.CloudPickler(out, protocol=5).dump((fnpickle.reusable(f), args, kwargs))
    assert len(frames) == 1 and bytes(frames[0]) == out.getvalue()
    g, a, k = unpack_apply(frames)
    assert g(*a, **k) == (args, kwargs)


@pytest.mark.parametrize("arg", [
    lambda: 1,                       # a function: cloudpickle pickles it by value
    np.arange(3),                    # not a plain value
    b"x" * (1 << 17),                # big bytes travel out of band
    {1: "a key that is not a str"},
    [[[1]]],                         # deeper than the check looks
])
def test_calls_with_other_arguments_still_go_through_cloudpickle(arg, monkeypatch):
    f, _ = main_function("def f(x):\n    return x\n")
    calls = []
    real = cloudpickle.CloudPickler.dump
    monkeypatch.setattr(cloudpickle.CloudPickler, "dump",
                        lambda self, obj: calls.append(1) or real(self, obj))
    g, a, k = unpack_apply(pack_apply(f, (arg,)))
    assert calls, "cloudpickle was not used"
    value = g(*a, **k)
    if callable(arg):
        assert value() == 1
    elif isinstance(arg, np.ndarray):
        assert (value == arg).all()
    else:
        assert value == arg
