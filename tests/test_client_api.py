"""The client API against a real local cluster (controller + engines over loopback TCP)."""

import concurrent.futures
import io
import json
import os
import signal
import sys
import threading
import time

import cloudpickle
import psutil
import pytest

import hpclaunch as hl
from hpclaunch import error
from hpclaunch.protocol import new_key, write_connection_file

# engines cannot import this test module: ship its functions by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _sleep_then(seconds, value):
    import time

    time.sleep(seconds)
    return value


def test_ids_and_target_selection(rc):
    assert rc.ids == sorted(rc.ids) and len(rc.ids) >= 4
    first, last = rc.ids[0], rc.ids[-1]
    assert rc[first].apply_sync(lambda x: x * 2, 21) == 42
    assert rc[:].apply_sync(lambda: 1) == [1] * len(rc.ids)
    assert rc[::2].targets == rc.ids[::2]
    assert rc[[first, last]].targets == [first, last]
    assert rc[-1].targets == last
    with pytest.raises(IndexError, match="no such engine"):
        rc[10_000]
    pids = rc.direct_view().apply_sync(os.getpid)
    assert len(set(pids)) == len(rc.ids)


def test_apply_async_is_a_future(rc):
    v = rc[:]
    ars = [v.apply_async(_sleep_then, 0.05, i) for i in range(3)]
    done = list(concurrent.futures.as_completed(ars, timeout=30))
    assert sorted(ar.get()[0] for ar in done) == [0, 1, 2]
    ar = ars[0]
    assert ar.ready() and ar.successful() and len(ar.msg_ids) == len(rc.ids)
    md = ar.metadata[0]
    assert md["engine_id"] == rc.ids[0] and md["status"] == "ok"
    assert md["submitted"] <= md["received"] and md["started"] <= md["completed"]
    assert ar.serial_time > 0 and ar.wall_time >= 0.05
    assert all(m in rc.results for m in ar.msg_ids)


def test_map_keeps_order_and_partitions_contiguously(rc):
    v = rc[:]
    assert v.map_sync(lambda x, y: x + y, range(10), range(10, 20)) == list(range(10, 30, 2))
    assert v.map_sync(lambda x: x, []) == []
    ar = v.map_async(lambda x: x * x, range(9))
    assert list(ar) == [x * x for x in range(9)]
    assert len(ar.msg_ids) == min(9, len(rc.ids))
    chunks = rc[:2].map_sync(lambda x: __import__("os").getpid(), range(5))
    assert chunks[:3] == [chunks[0]] * 3 and chunks[3:] == [chunks[3]] * 2


def test_namespace_push_pull_scatter_gather(rc):
    v = rc[:]
    v.block = True
    v.push({"a": 5, "b": [1, 2]})
    assert v.pull("a") == [5] * len(rc.ids)
    assert v.pull(["a", "b"]) == [[5, [1, 2]]] * len(rc.ids)
    v["c"] = 7
    assert v["c"] == [7] * len(rc.ids)
    assert rc[rc.ids[0]]["a"] == 5
    v.scatter("part", list(range(10)))
    assert v.gather("part", block=True) == list(range(10))
    v.scatter("one", list(range(len(rc.ids))), flatten=True)
    assert v["one"] == list(range(len(rc.ids)))
    ar = v.execute("d = a + c")
    assert isinstance(ar, hl.AsyncResult) and v["d"] == [12] * len(rc.ids)
    assert v.get("d") == [12] * len(rc.ids)


def test_run_file_and_sync_imports(rc, tmp_path):
    script = tmp_path / "script.py"
    script.write_text("from_file = 3 * 3\n")
    v = rc[:]
    v.run(str(script), block=True)
    assert v.pull("from_file", block=True) == [9] * len(rc.ids)
    with v.sync_imports(quiet=True):
        import json  # noqa: F401
        from os import path  # noqa: F401
    assert v.apply_sync(lambda: (json.dumps([1]), path.sep)) == [("[1]", "/")] * len(rc.ids)


def test_remote_and_parallel_decorators(rc):
    v = rc[:]

    @v.remote(block=True)
    def where():
        import os

        return os.getpid()

    assert len(set(where())) == len(rc.ids)

    @v.parallel(block=True)
    def chunk_sums(chunk):
        return [sum(chunk)]

    assert sum(chunk_sums(range(100))) == sum(range(100))
    assert chunk_sums.map([[1], [2, 3], []]) == [[1], [5], [0]]


def test_errors(rc):
    first = rc.ids[0]
    with pytest.raises(error.RemoteError) as info:
        rc[first].apply_sync(lambda: 1 / 0)
    assert info.value.ename == "ZeroDivisionError" and info.value.engine_id == first
    assert "ZeroDivisionError" in info.value.render_traceback()
    with pytest.raises(error.CompositeError) as info:
        rc[:2].apply_sync(lambda: 1 / 0)
    assert len(info.value.elist) == 2
    sent = len(rc.history)
    with pytest.raises(error.SerializationError, match="argument 0"):
        rc[:].apply_async(lambda x: x, threading.Lock())
    assert len(rc.history) == sent  # nothing was sent


def test_timeouts_wait_and_outstanding(rc):
    ar = rc[rc.ids[0]].apply_async(_sleep_then, 0.5, "late")
    with pytest.raises(error.TimeoutError, match="0 of 1 tasks"):
        ar.get(timeout=0.01)
    assert rc.wait(timeout=0.01) is False and ar.msg_ids[0] in rc.outstanding
    assert rc.wait([ar], timeout=30) is True
    assert ar.get() == "late" and not rc.outstanding


def test_streamed_output_and_display(rc):
    first = rc.ids[0]
    ar = rc[first].apply_async(
        lambda: (print("start", flush=True), __import__("time").sleep(1.0), print("end"))[-1])
    deadline = time.monotonic() + 10
    while "start" not in ar.stdout and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ar.stdout == "start\n" and not ar.ready()  # arrived live, before the reply
    ar.get(30)
    assert ar.stdout == "start\nend\n"
    out = io.StringIO()
    ar.display_outputs(file=out)
    assert out.getvalue() == f"[stdout:{first}]\nstart\nend\n"


def test_hub_queries(rc):
    ar = rc[:].apply_async(lambda: 3)
    ar.get(30)
    status = rc.queue_status()
    assert set(status) == set(rc.ids) | {"unassigned"}
    assert all({"queue", "completed", "tasks"} <= set(status[i]) for i in rc.ids)
    assert set(rc.queue_status(targets=rc.ids[0])) >= {"queue", "completed", "tasks"}
    history = rc.hub_history()
    assert set(ar.msg_ids) <= set(history)
    assert rc.get_result(ar.msg_ids).get(30) == [3] * len(rc.ids)
    rc.purge_results(jobs=ar)
    with pytest.raises(ValueError):
        rc.purge_results()


def test_get_result_from_another_client(rc):
    other = hl.Client(url_file=rc.connection_file, timeout=10)
    try:
        done = rc[rc.ids[0]].apply_async(lambda: "done")
        done.get(30)
        assert other.get_result(done.msg_ids[0]).get(30) == "done"
        running = rc[rc.ids[0]].apply_async(_sleep_then, 0.5, "later")
        rc.queue_status()   # same socket as the request: the hub has recorded it now
        fetched = other.get_result(running.msg_ids[0])
        assert fetched.get(30) == "later" and fetched.metadata["engine_id"] == rc.ids[0]
        with pytest.raises(error.RemoteError, match="KeyError"):
            other.get_result("no-such-msg-id").get(30)
    finally:
        other.close()


def test_abort_queued_tasks(rc):
    first = rc.ids[0]
    busy = rc[first].apply_async(_sleep_then, 1.0, None)
    queued = [rc[first].apply_async(lambda: 1) for _ in range(3)]
    time.sleep(0.2)
    rc[first].abort(jobs=queued, block=True)
    for ar in queued:
        with pytest.raises(error.TaskAborted):
            ar.get(30)
    busy.get(30)


def test_numpy_round_trip_lands_on_frame_memory(rc):
    np = pytest.importorskip("numpy")
    a = np.arange(1_000_000, dtype="float64")
    v = rc[rc.ids[0]]
    v.push({"arr": a}, block=True)
    back = v.pull("arr", block=True)
    assert (back == a).all() and not back.flags["OWNDATA"]


def test_wrong_key_raises_signature_error(rc, tmp_path):
    with open(rc.connection_file) as f:
        info = json.load(f)
    info["key"] = new_key().decode()
    path = write_connection_file(str(tmp_path / "wrong.json"), info)
    with pytest.raises(error.SignatureError, match="does not match the running controller"):
        hl.Client(url_file=path, timeout=10)


def test_close_is_idempotent_and_context_managed(rc):
    with hl.Client(url_file=rc.connection_file) as other:
        assert other.ids == rc.ids
    other.close()
    with pytest.raises(error.HpclaunchError, match="closed"):
        other.direct_view().apply_async(lambda: 1)


@pytest.mark.parametrize("heartbeat, bound", [
    ({}, 5.0),                                        # the tests' fast heartbeat
    ({"hb_period": 2.0, "hb_liveness": 3}, 10.0),     # the controller's defaults
], ids=["fast-heartbeat", "default-heartbeat"])
def test_dead_engine_fails_its_tasks_and_leaves_ids(start_cluster, heartbeat, bound):
    _, rc = start_cluster(n=2, **heartbeat)
    rc.wait_for_engines(2, timeout=30)
    victim = rc.ids[0]
    pid = rc.engines[victim]["pid"]
    ar = rc[victim].apply_async(_sleep_then, 30, None)
    time.sleep(0.3)
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    with pytest.raises(error.EngineError, match="heartbeat"):
        ar.get(30)
    assert time.monotonic() - killed < bound
    deadline = time.monotonic() + 30
    while victim in rc.ids and time.monotonic() < deadline:
        time.sleep(0.05)
    assert victim not in rc.ids


def test_shutdown_engine_then_hub(start_cluster):
    cluster, rc = start_cluster(n=2)
    rc.wait_for_engines(2, timeout=30)
    first = rc.ids[0]
    rc.shutdown(targets=first, block=True)
    deadline = time.monotonic() + 30
    while first in rc.ids and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rc.ids and first not in rc.ids
    controller = psutil.Process(cluster.controller_pid)
    rc.shutdown(hub=True)
    controller.wait(timeout=30)
    with pytest.raises(error.TimeoutError, match=r"only \d of 5 engines"):
        rc.wait_for_engines(5, timeout=0.01)
