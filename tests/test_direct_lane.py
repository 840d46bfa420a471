"""The direct lane (protocol/direct.py): DirectView work goes client -> engine in one hop,
and the controller still keeps the books, from the engines' ledgers (test_books.py)."""

import os
import socket
import struct
import time

import numpy as np
import pytest
import zmq

import hpclaunch as hl
from hpclaunch import error
from hpclaunch.client.direct import DirectLane, direct_url
from hpclaunch.engine.direct import address_towards
from hpclaunch.protocol import Session, new_key, paths, read_connection_file
from hpclaunch.protocol.direct import COPY_LIMIT
from hpclaunch.protocol.stream import PART, STREAM, STREAM_MIN
from conftest import wait_until


def _completed(rc, eid):
    return rc.queue_status(eid)["completed"]


def test_direct_view_work_goes_straight_to_the_engine(start_cluster):
    cluster, rc = start_cluster(n=2)
    eid = rc.ids[0]
    ar = rc[eid].apply_async(lambda x: x + 1, 41)
    assert ar.get(10) == 42
    assert ar.metadata["direct"] is True and ar.metadata["engine_id"] == eid

    big = np.arange(COPY_LIMIT // 4, dtype=np.float64)  # twice the copy limit
    view = rc[eid]
    push = view.push({"big": big}, block=False)
    push.get(10)
    assert push.metadata["direct"] is True
    assert np.array_equal(view.pull("big", block=True), big)
    view.execute("twice = big * 2", block=True)
    assert view.pull("twice", block=True)[-1] == big[-1] * 2

    # what is not DirectView work still goes through the controller
    balanced = rc.load_balanced_view(targets=[rc.ids[1]]).apply_async(lambda: 7)
    assert balanced.get(10) == 7 and "direct" not in balanced.metadata
    # the controller's books have all five direct tasks: queue_status waits for the ledgers
    assert _completed(rc, eid) == 5

    relayed = hl.Client(profile_dir=cluster.profile_dir, direct=False)
    try:
        through = relayed[eid].apply_async(lambda: "relayed")
        assert through.get(10) == "relayed" and "direct" not in through.metadata
    finally:
        relayed.close()


def test_other_clients_get_direct_results_unless_too_big(start_cluster):
    cluster, rc = start_cluster(n=1)
    eid = rc.ids[0]
    small = rc[eid].apply_async(lambda: "small")
    big = rc[eid].apply_async(lambda n: b"x" * n, 2 * COPY_LIMIT)
    assert small.get(10) == "small" and len(big.get(10)) == 2 * COPY_LIMIT
    wait_until(lambda: _completed(rc, eid) == 2, what="both results recorded")

    other = hl.Client(profile_dir=cluster.profile_dir)
    try:
        assert other.get_result(small.msg_ids[0]).get(10) == "small"
        with pytest.raises(error.RemoteError, match="went straight from engine") as caught:
            other.get_result(big.msg_ids[0]).get(10)
        assert caught.value.ename == "ResultNotKept"
    finally:
        other.close()

    # the request of a big push is not kept either: it cannot be resubmitted, and says so
    push = rc[eid].push({"blob": b"y" * (2 * COPY_LIMIT)}, block=False)
    push.get(10)
    wait_until(lambda: _completed(rc, eid) == 3, what="the push recorded")
    with pytest.raises(error.RemoteError, match="has no stored request"):
        rc.resubmit(push.msg_ids).get(10)
    assert rc.resubmit(small.msg_ids).get(10) == ["small"]


def test_direct_lane_is_encrypted_with_the_cluster(start_cluster):
    cluster, rc = start_cluster(n=1, controller_ip="0.0.0.0",
                                controller_args=["--location", "127.0.0.1"])
    info = rc.engines[rc.ids[0]]["direct"]
    assert info["curve_public"] and info["url"].startswith("tcp://127.0.0.1:")
    ar = rc[:].apply_async(lambda: "encrypted")
    assert ar.get(10) == ["encrypted"] and ar.metadata[0]["direct"] is True

    # a socket without the engine's public key gets no CurveZMQ handshake, hence no answer
    conn = read_connection_file(paths.client_file(cluster.profile_dir))
    ctx = zmq.Context.instance()
    plain = ctx.socket(zmq.DEALER)
    try:
        plain.setsockopt(zmq.LINGER, 0)
        plain.connect(info["url"])
        Session(conn["key"]).send(plain, "apply_request", {}, metadata={"engine": rc.ids[0]})
        assert plain.poll(1000) == 0
    finally:
        plain.close()
    assert rc[:].apply_sync(lambda: "still serving") == ["still serving"]


def test_beyond_loopback_the_engine_listens_where_it_reaches_the_controller(start_cluster):
    address = address_towards("198.51.100.1")  # TEST-NET-2: routed, never reached
    if address.startswith("127."):
        pytest.skip("this host has no address beyond loopback")
    cluster, rc = start_cluster(n=1, controller_ip="0.0.0.0",
                                controller_args=["--location", address])
    info = rc.engines[rc.ids[0]]["direct"]
    assert info["url"].startswith(f"tcp://{address}:") and info["curve_public"]
    ar = rc[:].apply_async(lambda: "over the network, encrypted")
    assert ar.get(10) == ["over the network, encrypted"] and ar.metadata[0]["direct"] is True


def test_big_buffers_stream_both_ways_and_land_whole(start_cluster):
    """Push and pull above STREAM_MIN go as part messages (protocol/stream.py); from two
    engines at once, the client's lane gets two interleaved streams."""
    cluster, rc = start_cluster(n=2)
    rng = np.random.default_rng(3)
    arrays = {eid: rng.random(STREAM_MIN // 8 * 2 + 3) for eid in rc.ids}
    for eid, a in arrays.items():
        ar = rc[eid].push({"big": a, "small": 1}, block=False)
        ar.get(20)
        assert ar.metadata["direct"] is True
    rc[:].execute("total = float(big.sum())", block=True)
    assert rc[:].pull("total", block=True) == [float(a.sum()) for a in arrays.values()]
    pulled = rc[:].pull("big", block=True)
    assert all(np.array_equal(p, arrays[eid]) for p, eid in zip(pulled, rc.ids))
    pulled[0][0] = -1.0  # the client's own memory: writable
    assert rc[rc.ids[0]].pull("big", block=True)[0] == arrays[rc.ids[0]][0]


def test_engine_drops_bad_streams_on_the_direct_lane_and_serves_on(start_cluster):
    cluster, rc = start_cluster(n=1)
    eid = rc.ids[0]
    raw = zmq.Context.instance().socket(zmq.DEALER)
    try:
        raw.setsockopt(zmq.LINGER, 5000)  # (every message must go out before close)
        raw.connect(rc.engines[eid]["direct"]["url"])
        raw.send_multipart([PART, b"no stream"])
        raw.send_multipart([STREAM, b"not a layout", b"{}", b"{}", b"{}", b"{}"])
        raw.send_multipart([STREAM, struct.pack(">QQ", 5, 65536), b"{}", b"{}", b"{}", b"{}"])
        raw.send_multipart([PART, b"x" * 1000])
        raw.send_multipart([b"<IDS|MSG>", b"sig"])  # the signature before the rest came
    finally:
        raw.close()
    logs = paths.logs_dir(cluster.profile_dir)

    def reported():
        text = "".join(open(os.path.join(logs, f)).read() for f in os.listdir(logs)
                       if "engine" in f)
        return all(r in text for r in ("dropped a part of no stream",
                                       "dropped a stream with a bad layout", "dropped a message"))
    wait_until(reported, what="the engine's log to report the three bad streams")
    assert rc[eid].apply_sync(lambda: "alive") == "alive"


def test_engine_refuses_control_and_bad_frames_on_the_direct_lane(start_cluster):
    cluster, rc = start_cluster(n=1)
    eid = rc.ids[0]
    conn = read_connection_file(paths.client_file(cluster.profile_dir))
    ctx = zmq.Context.instance()
    raw = ctx.socket(zmq.DEALER)
    try:
        raw.setsockopt(zmq.LINGER, 0)
        raw.setsockopt(zmq.RCVTIMEO, 5000)
        raw.connect(rc.engines[eid]["direct"]["url"])
        me = Session(conn["key"])
        raw.send_multipart([b"garbage"])
        raw.send_multipart([b"<IDS|MSG>", b"not a signature", b"{}", b"{}", b"{}", b"{}"])
        Session("wrong-key").send(raw, "clear_request", {})
        sent = me.send(raw, "clear_request", {}, metadata={"engine": eid})
        reply = me.unpack(raw.recv_multipart())
        assert reply.parent["msg_id"] == sent["msg_id"]
        assert reply.content["ename"] == "ProtocolError"
        assert "send clear_request through the controller" in reply.content["evalue"]
    finally:
        raw.close()
    assert rc[eid].apply_sync(lambda: "alive") == "alive"


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_engine_is_used_through_the_controller():
    here = socket.gethostname()
    engines = {5: {"hostname": here, "direct": {"url": f"tcp://127.0.0.1:{_closed_port()}"}},
               6: {"hostname": "elsewhere", "direct": {"url": "tcp://127.0.0.1:9"}},
               7: {"hostname": here}}
    ctx = zmq.Context()
    lane = DirectLane(ctx, None, lambda: engines, Session(new_key()))
    try:
        assert lane.usable(5)
        started = time.monotonic()
        assert lane.send(5, [b"<IDS|MSG>", b"x"]) is False
        assert 1.0 < time.monotonic() - started < 10
        assert not lane.usable(5)      # relay-only for good: no second wait
        assert not lane.usable(6)      # another host's loopback address is not ours
        assert not lane.usable(7)      # no direct port announced
        assert not lane.usable(8)      # not a registered engine
    finally:
        lane.close()
        ctx.term()


@pytest.mark.parametrize("info, usable", [
    ({"hostname": socket.gethostname(), "direct": {"url": "tcp://127.0.0.1:5"}}, True),
    ({"hostname": "other", "direct": {"url": "tcp://10.1.2.3:5"}}, True),
    ({"hostname": "other", "direct": {"url": "tcp://localhost:5"}}, False),
    ({"hostname": "other", "direct": {"url": "ipc:///tmp/x"}}, False),
    ({"hostname": "other", "direct": "tcp://10.1.2.3:5"}, False),
    ({"hostname": "other", "direct": None}, False),
])
def test_which_direct_urls_a_client_uses(info, usable):
    assert (direct_url(info) is not None) == usable


def test_an_engine_spins_only_briefly_after_a_blocking_call(start_cluster):
    """After answering a blocking call the engine looks for the next one without sleeping
    for SPIN_SECONDS (transport.spin_poll), then sleeps: an idle engine burns no CPU."""
    import psutil

    _cluster, rc = start_cluster(n=1)
    view = rc[rc.ids[0]]
    engine = psutil.Process(view.apply_sync(os.getpid))
    for _ in range(200):
        view.apply_sync(int)
    time.sleep(0.2)
    before = sum(engine.cpu_times()[:2])
    time.sleep(1.0)
    assert sum(engine.cpu_times()[:2]) - before < 0.05


def test_reused_stream_buffers_never_change_what_a_reader_holds(start_cluster):
    """Streamed buffers come from a pool that reuses memory nothing holds any more
    (protocol/recvpool.py): what a client or an engine still holds is never written."""
    from hpclaunch.protocol.recvpool import POOL

    _cluster, rc = start_cluster(n=1)
    view = rc[rc.ids[0]]
    n = STREAM_MIN // 8 + 1000  # streamed: over STREAM_MIN bytes
    original = np.arange(n, dtype=np.float64)
    view.push({"a": original}, block=True)
    view.push({"b": original * 2}, block=True)  # "a" holds the first pushed buffer
    kept = view.pull("a", block=True)
    view.execute("a[:] = -1", block=True)
    for _ in range(4):  # each result is dropped at once: its buffer is free for the next
        assert (view.pull("a", block=True) == -1).all()
    assert np.array_equal(kept, original), "a held result is never reused"
    assert np.array_equal(view.pull("b", block=True), original * 2)
    # "kept" and one buffer each later pull reused: a result the program dropped leaves
    # rc.results with it (client/results.py), so the client does not grow a buffer a pull
    assert POOL.held()[0] <= 3, "the client reused the buffers of dropped results"

    def pool_held():
        from hpclaunch.protocol.recvpool import POOL
        return POOL.held()[0]

    for i in range(8):  # each push replaces "b": the buffer it held is free again soon
        view.push({"b": original + i}, block=True)
    assert np.array_equal(view.pull("b", block=True), original + 7)
    # "a", the "b" in use, the one before it, and one the ledger may still hold for the
    # books (up to 10 ms): not one per push
    assert view.apply_sync(pool_held) <= 4, "the engine reused the buffers it let go of"
