"""rc.results (client/results.py): every result by msg_id, a big one only while the
program holds it, so a loop pulling big arrays does not grow the client."""

import gc
import time

import numpy as np
import pytest

import hpclaunch as hl
from hpclaunch import error
from hpclaunch.client.asyncresult import AsyncResult
from hpclaunch.client.results import BIG_RESULT, Results
from hpclaunch.protocol.recvpool import POOL
from hpclaunch.protocol.stream import STREAM_MIN


class _Value:
    """A result a weak reference can follow (as a numpy array)."""


def test_small_results_are_kept_as_ipyparallel_keeps_them():
    results = Results()
    results.record("a", _Value(), BIG_RESULT - 1)
    results.record("b", [1, 2], 0)
    gc.collect()
    assert set(results) == {"a", "b"} and len(results) == 2 and results["b"] == [1, 2]


def test_a_big_result_stays_while_the_program_holds_it():
    results = Results()
    value = _Value()
    results.record("m", value, BIG_RESULT)
    assert "m" in results and results["m"] is value and list(results) == ["m"]
    del value
    gc.collect()
    assert "m" not in results and len(results) == 0 and list(results) == []
    assert results.released("m")
    with pytest.raises(KeyError):
        results["m"]


def test_a_big_list_stays_while_its_async_result_lives():
    results = Results()
    ar = AsyncResult(None, ["m0", "m1"])
    value = ar._task_done("m1", [b"x", b"y"])  # a list: no weak reference follows it
    results.record("m1", value, BIG_RESULT, ar)
    del value
    gc.collect()
    assert results["m1"] == [b"x", b"y"], "the AsyncResult holds it"
    del ar
    gc.collect()
    assert "m1" not in results and results.released("m1")


def test_keep_all_keeps_big_results_and_the_mapping_behaves_as_a_dict():
    results = Results(keep_all=True)
    results.record("big", _Value(), 10 * BIG_RESULT)
    gc.collect()
    assert "big" in results and not results.released("big")
    held = Results()
    value = _Value()
    held.record("h", value, BIG_RESULT)
    held["s"] = 1
    assert held.pop("h") is value and held.pop("h", None) is None
    del held["s"]
    with pytest.raises(KeyError):
        del held["s"]
    held.update(a=1, b=2)
    held.clear()
    assert len(held) == 0 and dict(held) == {}
    many = Results()
    many.update((str(i), i) for i in range(100_000))
    started = time.perf_counter()
    many.clear()
    assert not many and time.perf_counter() - started < 1.0, "clear() is not one pop per key"
    held.record("again", value, BIG_RESULT)
    held["again"] = "small now"  # an assignment replaces the weak entry for good
    del value
    gc.collect()
    assert held["again"] == "small now" and not held.released("again")


def test_pulling_big_arrays_in_a_loop_does_not_grow_the_client(start_cluster):
    _cluster, rc = start_cluster(n=1)
    view = rc[rc.ids[0]]
    array = np.arange(STREAM_MIN // 8 + 1000, dtype=np.float64)  # streamed
    view.push({"a": array}, block=True)
    before = POOL.held()[0]
    msg_ids = []
    for _ in range(6):
        assert np.array_equal(view.pull("a", block=True), array)
        msg_ids.append(rc.history[-1])
    gc.collect()
    assert POOL.held()[0] <= before + 1, "each pull reused the buffer the last one let go"
    assert not any(m in rc.results for m in msg_ids)
    assert all(rc.metadata[m]["status"] == "ok" for m in msg_ids), "metadata stays"
    with pytest.raises(error.ResultReleased, match="keep_results=True"):
        rc.get_result(msg_ids[-1]).get(10)

    kept = view.pull("a", block=False)  # the program holds the AsyncResult: so does rc.results
    kept.get(10)
    gc.collect()
    assert np.array_equal(rc.results[kept.msg_ids[0]], array)
    small = view.apply_sync(lambda: b"s" * 100)
    assert rc.results[rc.history[-1]] == small, "small results are kept"


def test_keep_results_keeps_big_results_as_ipyparallel_does(start_cluster):
    cluster, _rc = start_cluster(n=1)
    rc = hl.Client(profile_dir=cluster.profile_dir, keep_results=True)
    try:
        rc.wait_for_engines(1, timeout=30)
        view = rc[rc.ids[0]]
        view.execute(f"import numpy; a = numpy.ones({BIG_RESULT // 8 * 2})", block=True)
        view.pull("a", block=True)
        gc.collect()
        msg_id = rc.history[-1]
        assert rc.results[msg_id].sum() == BIG_RESULT // 8 * 2
        assert rc.get_result(msg_id).get(10).sum() == BIG_RESULT // 8 * 2
    finally:
        rc.close()
