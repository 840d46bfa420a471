"""Task dependencies against a real cluster: after/follow rules, functional dependencies
(@require, @depend, dependent) rerouting tasks, timeouts, and a random DAG."""

import os
import random
import sys
import time

import cloudpickle
import pytest

import hpclaunch as hl
from hpclaunch import error
from remote_helpers import fail, sleep_then

cloudpickle.register_pickle_by_value(sys.modules[__name__])




def interactive(source, name):
    """A function as if typed at the client's prompt (module ``__main__``): it travels by
    value and, on the engine, runs in the engine namespace."""
    ns = {"__name__": "__main__"}
    exec(source, ns)
    return ns[name]


@pytest.fixture
def lv(rc):
    return rc.load_balanced_view()


def _submit(lv, f, *args, **flags):
    with lv.temp_flags(**flags):
        return lv.apply_async(f, *args)


# -- after: time dependencies -----------------------------------------------------
def test_after_waits_for_success(lv):
    parent = lv.apply_async(sleep_then, 0.5, "parent")
    child = _submit(lv, sleep_then, 0, "child", after=parent)
    assert child.get(timeout=30) == "child"
    assert child.metadata["started"] >= parent.metadata["completed"]
    # a msg_id, a list, and a Dependency all mean the same
    for after in (parent.msg_ids[0], [parent], hl.Dependency([parent.msg_ids[0]])):
        assert _submit(lv, sleep_then, 0, 1, after=after).get(timeout=30) == 1


def test_after_success_fails_when_the_dependency_failed(lv):
    failed = lv.apply_async(fail, "parent failed")
    with pytest.raises(error.RemoteError):
        failed.get(timeout=30)
    child = _submit(lv, sleep_then, 0, "child", after=failed)
    with pytest.raises(error.ImpossibleDependency, match="failed"):
        child.get(timeout=30)
    assert child.metadata["engine_id"] is None


def test_after_failure_only(lv):
    failed = lv.apply_async(fail, "expected")
    succeeded = lv.apply_async(sleep_then, 0, "ok")
    on_failure = hl.Dependency(failed, success=False, failure=True)
    assert _submit(lv, sleep_then, 0, "cleanup", after=on_failure).get(timeout=30) == "cleanup"
    not_on_success = hl.Dependency(succeeded, success=False, failure=True)
    with pytest.raises(error.ImpossibleDependency, match="succeeded"):
        _submit(lv, sleep_then, 0, "never", after=not_on_success).get(timeout=30)
    either = hl.Dependency([failed, succeeded], success=True, failure=True)
    assert _submit(lv, sleep_then, 0, "any", after=either).get(timeout=30) == "any"


def test_after_all_versus_any(lv):
    failed = lv.apply_async(fail, "one bad")
    slow_ok = lv.apply_async(sleep_then, 0.5, "ok")
    any_ok = _submit(lv, sleep_then, 0, "any", after=hl.Dependency([failed, slow_ok], all=False))
    assert any_ok.get(timeout=30) == "any"
    assert any_ok.metadata["started"] >= slow_ok.metadata["completed"]
    with pytest.raises(error.ImpossibleDependency):
        _submit(lv, sleep_then, 0, "all", after=[failed, slow_ok]).get(timeout=30)
    also_failed = lv.apply_async(fail, "two bad")
    with pytest.raises(error.ImpossibleDependency):
        _submit(lv, sleep_then, 0, "none", after=hl.Dependency([failed, also_failed],
                                                                   all=False)).get(timeout=30)


def test_unknown_msg_id_is_impossible_at_once(lv):
    start = time.monotonic()
    with pytest.raises(error.ImpossibleDependency, match="unknown msg_id"):
        _submit(lv, sleep_then, 0, 0, after=["no-such-task"]).get(timeout=30)
    with pytest.raises(error.ImpossibleDependency, match="unknown msg_id"):
        _submit(lv, sleep_then, 0, 0, follow="no-such-task").get(timeout=30)
    assert time.monotonic() - start < 5


def test_dependency_timeout(lv):
    slow = lv.apply_async(sleep_then, 3, "slow")
    start = time.monotonic()
    child = _submit(lv, sleep_then, 0, "child", after=slow, timeout=0.3)
    with pytest.raises(error.DependencyTimeout, match="timed out waiting"):
        child.get(timeout=30)
    assert time.monotonic() - start < 2.5 and not slow.done()


# -- follow: location dependencies ----------------------------------------------------
def test_follow_runs_where_the_dependency_ran(lv):
    parent = lv.apply_async(os.getpid)
    parent.get(timeout=30)
    children = [_submit(lv, os.getpid, follow=parent) for _ in range(6)]
    assert {c.get(timeout=30) for c in children} == {parent.get()}
    assert {c.metadata["engine_id"] for c in children} == {parent.metadata["engine_id"]}


def test_follow_all_across_engines_is_impossible_at_once(rc, lv):
    a = _submit(lv, sleep_then, 0, "a", targets=[rc.ids[0]])
    b = _submit(lv, sleep_then, 0, "b", targets=[rc.ids[1]])
    a.get(timeout=30), b.get(timeout=30)
    start = time.monotonic()
    with pytest.raises(error.ImpossibleDependency, match="ran on different engines"):
        _submit(lv, sleep_then, 0, "c", follow=[a, b]).get(timeout=30)
    assert time.monotonic() - start < 2
    either = _submit(lv, os.getpid, follow=hl.Dependency([a, b], all=False))
    either.get(timeout=30)
    assert either.metadata["engine_id"] in rc.ids[:2]


# -- functional dependencies -----------------------------------------------------------
def test_depend_reroutes_to_the_only_engine_that_passes(rc, lv):
    chosen = rc.ids[1]
    chosen_pid = rc.engines[chosen]["pid"]

    def on_pid(pid):
        import os

        return os.getpid() == pid

    def pid():
        import os

        return os.getpid()

    where = hl.depend(on_pid, chosen_pid)(pid)
    ars = [lv.apply_async(where) for _ in range(4)]
    assert [ar.get(timeout=30) for ar in ars] == [chosen_pid] * 4
    assert {ar.metadata["engine_id"] for ar in ars} == {chosen}
    # the functional form, and the decorated function still runs locally when its check passes
    guarded = hl.dependent(pid, on_pid, chosen_pid)
    assert lv.apply_sync(guarded) == chosen_pid
    assert hl.depend(on_pid, os.getpid())(pid)() == os.getpid()
    with pytest.raises(error.UnmetDependency):
        guarded()


def test_require_imports_into_the_namespace_and_pushes_functions(rc, lv):
    helper = interactive("def double(x):\n    return 2 * x\n", "double")
    uses = interactive("def uses():\n    return json.dumps([double(21)])\n", "uses")
    task = hl.require("json", helper)(uses)
    assert lv.apply_sync(task) == "[42]"
    # a module object works as well as its name
    assert lv.apply_sync(hl.require(os)(interactive("def f():\n    return os.sep\n", "f"))) \
        == os.sep


def test_require_that_no_engine_meets_is_impossible(rc, lv):
    @hl.require("hpclaunch_no_such_module_here")
    def never():
        return 1

    ar = lv.apply_async(never)
    with pytest.raises(error.ImpossibleDependency, match="refused"):
        ar.get(timeout=30)
    with pytest.raises(ValueError, match="not a module name"):
        hl.require("import os; os")
    with pytest.raises(TypeError, match="by keyword"):
        hl.require(42)


# -- a random DAG ----------------------------------------------------------------------
def test_random_dag_runs_in_topological_order(lv):
    rng = random.Random(20240611)
    n = 60
    parents = {i: sorted(rng.sample(range(i), min(i, rng.randint(0, 3)))) for i in range(n)}
    results = {}
    for i in range(n):   # indices are a topological order: edges go from lower to higher
        deps = [results[p] for p in parents[i]]
        results[i] = _submit(lv, sleep_then, rng.random() * 0.02, i, after=deps)
    assert [results[i].get(timeout=60) for i in range(n)] == list(range(n))
    for i, ps in parents.items():
        started = results[i].metadata["started"]
        for p in ps:
            assert started >= results[p].metadata["completed"], (p, i)
    edges = sum(len(ps) for ps in parents.values())
    assert edges >= 50
