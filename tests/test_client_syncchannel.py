"""Blocking calls read their own replies (client/syncchannel.py), against a real cluster.

What must hold: a blocking call answers through the SyncChannel and leaves it idle; the
controller's own answers (an unknown engine) come back on it too; a caller that stops
waiting leaves its late replies to the I/O thread, which completes them and hands the
channel back; callers in several threads at once all get their own results.
"""

import sys
import threading

import cloudpickle
import pytest

from conftest import wait_until
from hpclaunch import error
from hpclaunch.client.syncchannel import BORROWED, IDLE
from hpclaunch.protocol.serialize import pack_apply

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _sleep_then(seconds, value):
    import time

    time.sleep(seconds)
    return value


def _replies_read_on(channel, calls):
    """Count the messages the calling thread reads on ``channel`` during ``calls()``."""
    seen = []
    original = channel._on_frames

    def counting(frames):
        seen.append(threading.current_thread().name)
        original(frames)

    channel._on_frames = counting
    try:
        calls()
    finally:
        channel._on_frames = original
    return seen


def test_blocking_calls_read_their_own_replies(rc):
    channel = rc._sync
    me = threading.current_thread().name
    first = len(rc.history)
    seen = _replies_read_on(channel, lambda: (
        rc[rc.ids[0]].apply_sync(lambda x: print("out", x) or x + 1, 41),
        rc[:].apply_sync(lambda: 7),
        rc.load_balanced_view().apply_sync(lambda: 3)))
    assert seen and set(seen) == {me}, "the caller reads every reply itself"
    assert channel.state == IDLE
    printed, balanced = rc.history[first], rc.history[-1]
    assert rc.results[balanced] == 3 and rc.metadata[balanced]["status"] == "ok"
    assert rc.metadata[printed]["stdout"] == "out 41\n", "stdout still reaches the metadata"


def test_the_controllers_own_answer_comes_back_on_the_channel(rc):
    ar = rc._submit("apply_request", {}, [(10_000, pack_apply(lambda: 1, ()))], "f",
                    wait=True, single=True)
    assert ar.done()
    with pytest.raises(error.EngineError, match="not registered"):
        ar.get(0)
    assert rc._sync.state == IDLE


def test_late_replies_go_to_the_io_thread(rc):
    """A caller that gives up (a timeout, Ctrl-C) hands the socket to the I/O thread."""
    channel = rc._sync
    assert channel.try_borrow()
    sent = []
    from hpclaunch.client.asyncresult import AsyncResult

    ar = rc._send_requests("apply_request", {}, [(rc.ids[0], pack_apply(_sleep_then, (0.5, 9)))],
                           "late", AsyncResult, None, channel, sent, {"single": True})
    channel.wait(_done_future(), sent)   # stop waiting at once: the reply is still to come
    assert not ar.done()
    assert ar.get(timeout=10) == 9, "the I/O thread completed the late reply"
    wait_until(lambda: channel.state == IDLE, 5, lambda: f"the channel (still {channel.state})")
    assert rc[rc.ids[0]].apply_sync(lambda: "again") == "again"


def test_threads_calling_at_once_each_get_their_own_results(rc):
    results, errors = {}, []

    def worker(k):
        try:
            view = rc[rc.ids[k % len(rc.ids)]]
            results[k] = [view.apply_sync(lambda a, b: a * b, k, i) for i in range(40)]
        except Exception as e:  # reported below with the thread's number
            errors.append((k, e))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert results == {k: [k * i for i in range(40)] for k in range(4)}
    assert rc._sync.state != BORROWED


def _done_future():
    import concurrent.futures

    f = concurrent.futures.Future()
    f.set_result(None)
    return f



def test_a_blocking_call_waiting_behind_other_work_shows_in_queue_status(start_cluster):
    """A blocking call on the direct lane is booked by the engine once read; one that waits
    unread behind another client's work is copied to the controller after COPY_AFTER."""
    import time

    import hpclaunch as hl
    from hpclaunch.client.syncchannel import COPY_AFTER

    cluster, rc = start_cluster(n=1)
    eid = rc.ids[0]
    busy = rc[eid].apply_async(time.sleep, 3)  # not blocking: booked at once
    wait_until(lambda: rc.queue_status(eid)["queue"] == 1, what="the running task booked")
    other = hl.Client(profile_dir=cluster.profile_dir)
    try:
        results = []
        waiter = threading.Thread(target=lambda: results.append(other[eid].apply_sync(abs, -7)))
        waiter.start()
        wait_until(lambda: rc.queue_status(eid)["queue"] == 2, timeout=COPY_AFTER + 1.5,
                   what="the blocking call, unread behind the sleep, in queue_status")
        waiter.join(10)
        assert results == [7] and busy.get(10) is None
        wait_until(lambda: rc.queue_status(eid) == {"queue": 0, "tasks": 0, "completed": 2},
                   what="both tasks completed, each booked once")
    finally:
        other.close()
