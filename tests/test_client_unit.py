"""Client pieces that need no controller: partitioning, AsyncResult semantics, the Inbox.

Messages are real signed frames built with a Session (as an engine or the controller
would), fed straight to the Inbox the I/O thread would feed.
"""

import asyncio
import concurrent.futures
import io
import json
import os
import socket
import subprocess
import sys
import time

import pytest

import hpclaunch as hl
from hpclaunch import error
from hpclaunch.client.asyncresult import AsyncMapResult, AsyncResult
from hpclaunch.client.inbox import HubRequest, Inbox, new_metadata
from hpclaunch.client.map import (block_bounds, check_lengths, concatenate, join, map_chunk,
                                  partition)
from hpclaunch.client.progress import TextBar
from hpclaunch.protocol import DELIM, Session, new_key, serialize, write_connection_file

# -- partitioning -------------------------------------------------------------------


def test_block_bounds_front_loads_the_remainder():
    assert block_bounds(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert block_bounds(2, 4) == [(0, 1), (1, 2), (2, 2), (2, 2)]
    assert block_bounds(0, 2) == [(0, 0), (0, 0)]
    with pytest.raises(ValueError, match="at least one engine"):
        block_bounds(3, 0)


@pytest.mark.parametrize("length,parts", [(10, 3), (7, 7), (3, 5), (100, 8), (0, 2)])
def test_block_partitions_concatenate_back_in_order(length, parts):
    seq = list(range(length))
    chunks = [partition(seq, i, parts) for i in range(parts)]
    assert concatenate(chunks) == seq
    assert all(isinstance(c, list) for c in chunks)


def test_round_robin_partitions_interleave_back():
    seq = list(range(11))
    chunks = [partition(seq, i, 3, dist="r") for i in range(3)]
    assert chunks[0] == [0, 3, 6, 9]
    assert join(chunks, dist="r") == seq


def test_partition_keeps_the_type_and_slices_iterators():
    assert partition((1, 2, 3, 4), 1, 2) == (3, 4)
    assert partition("abcdef", 0, 3) == "ab"
    assert partition(range(10), 2, 3) == range(7, 10)
    with pytest.raises(ValueError, match="outside"):
        partition([1, 2], 2, 2)
    with pytest.raises(ValueError, match="distribution"):
        partition([1, 2], 0, 2, dist="x")


def test_numpy_chunks_concatenate_to_an_array():
    np = pytest.importorskip("numpy")
    a = np.arange(10)
    chunks = [partition(a, i, 3) for i in range(3)]
    out = concatenate(chunks)
    assert isinstance(out, np.ndarray) and (out == a).all()


def test_scalars_concatenate_to_a_list_and_sequences_must_match():
    assert concatenate([1, 2, 3]) == [1, 2, 3]
    assert concatenate([]) == []
    assert check_lengths([[1, 2], (3, 4)]) == 2
    with pytest.raises(ValueError, match=r"same length.*\[2, 3\]"):
        check_lengths([[1, 2], [1, 2, 3]])


def test_map_chunk_ships_by_value_so_engines_never_import_the_client():
    import cloudpickle

    data = cloudpickle.dumps(map_chunk)
    # unpickle where importing hpclaunch is impossible, as on a bare engine
    code = ("import sys, pickle\n"
            "sys.modules['hpclaunch'] = None\n"
            "f = pickle.loads(sys.stdin.buffer.read())\n"
            "print(f(lambda x, y: x + y, [1, 2], [10, 20]))\n")
    out = subprocess.run([sys.executable, "-c", code], input=data, capture_output=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.strip() == b"[11, 22]"


# -- AsyncResult fed by hand through the Inbox -----------------------------------------

KEY = new_key()


class Wire:
    """A client-side Inbox plus the 'engine' and 'controller' that answer it."""

    def __init__(self):
        self.client_session = Session(KEY)
        self.inbox = Inbox(self.client_session, connection_file="/tmp/x/client.json")
        self.engine = Session(KEY, username="engine")
        self.controller = Session(KEY, username="controller")
        self.requests = {}

    def submit(self, n=1, engines=None, ar_class=AsyncResult, **kwargs):
        """Register n requests as Client._submit does; returns the AsyncResult."""
        engines = engines or list(range(n))
        headers = [self.client_session.header("apply_request") for _ in engines]
        ar = ar_class(self.inbox, [h["msg_id"] for h in headers], targets=engines, **kwargs)
        for h, eid in zip(headers, engines):
            self.inbox.metadata[h["msg_id"]] = new_metadata(h["msg_id"], eid, h["date"])
            self.inbox.pending[h["msg_id"]] = ar
            self.inbox.outstanding.add(h["msg_id"])
            self.requests[h["msg_id"]] = h
        return ar

    def frames(self, session, msg_type, content, parent=None, metadata=None, buffers=()):
        _, frames = session.pack(msg_type, content, parent=parent, metadata=metadata,
                                 buffers=buffers)
        return frames

    def reply(self, msg_id, value=None, status="ok", metadata=None, **content):
        buffers = serialize(value) if status == "ok" and value is not None else ()
        md = {"engine_id": 0, "started": time.time(), "completed": time.time(),
              "status": status, **(metadata or {})}
        frames = self.frames(self.engine, "apply_reply", {"status": status, **content},
                             parent=self.requests[msg_id], metadata=md, buffers=buffers)
        self.inbox.on_frames(frames)
        return frames


@pytest.fixture
def wire():
    return Wire()


def test_single_result_is_unwrapped_and_recorded(wire):
    ar = wire.submit(1, single=True)
    assert not ar.ready() and ar.progress == 0
    assert ar.cancel() is False  # already on the wire: abort(), not cancel()
    wire.reply(ar.msg_ids[0], {"x": 1})
    assert ar.ready() and ar.successful()
    assert ar.get(0) == {"x": 1}
    md = ar.metadata
    assert md["status"] == "ok" and md["received"] >= md["submitted"]
    assert wire.inbox.results[ar.msg_ids[0]] == {"x": 1}
    assert not wire.inbox.outstanding and not wire.inbox.pending


def test_multi_target_results_are_a_list_in_target_order(wire):
    ar = wire.submit(3)
    for i in reversed(range(3)):
        wire.reply(ar.msg_ids[i], i * 10)
    assert ar.get() == [0, 10, 20]
    assert len(ar) == 3 and ar.progress == 3
    assert list(ar) == [0, 10, 20]


def test_get_timeout_raises_hpclaunch_timeout(wire):
    ar = wire.submit(2)
    wire.reply(ar.msg_ids[0], 1)
    with pytest.raises(error.TimeoutError, match="1 of 2 tasks"):
        ar.get(timeout=0.01)
    assert ar.wait(0.01) is False


def test_single_failure_raises_it_multi_target_raises_composite(wire):
    err = {"ename": "ZeroDivisionError", "evalue": "division by zero", "traceback": "tb"}
    ar = wire.submit(1, single=True)
    wire.reply(ar.msg_ids[0], status="error", metadata={"engine_id": 1}, **err)
    with pytest.raises(error.RemoteError) as info:
        ar.get()
    assert info.value.ename == "ZeroDivisionError" and info.value.engine_id == 1

    ar = wire.submit(2)       # one of two fails: ipyparallel's CompositeError, with just it
    wire.reply(ar.msg_ids[0], 1)
    wire.reply(ar.msg_ids[1], status="error", metadata={"engine_id": 1}, **err)
    with pytest.raises(error.CompositeError) as info:
        ar.get()
    assert [e.ename for e in info.value.elist] == ["ZeroDivisionError"]
    assert info.value.elist[0].engine_id == 1
    assert not ar.successful()

    ar = wire.submit(2)
    for m in ar.msg_ids:
        wire.reply(m, status="error", **err)
    with pytest.raises(error.CompositeError) as info:
        ar.get()
    assert len(info.value.elist) == 2 and "2 failed" in str(info.value)


def test_aborted_and_engine_error_replies(wire):
    ar = wire.submit(1, single=True)
    wire.reply(ar.msg_ids[0], status="aborted")
    with pytest.raises(error.TaskAborted, match="aborted on engine 0"):
        ar.get()
    ar = wire.submit(1, single=True)
    frames = wire.frames(wire.controller, "apply_reply",
                         {"status": "error", "ename": "EngineError", "evalue": "engine 0 died"},
                         parent=wire.requests[ar.msg_ids[0]])
    wire.inbox.on_frames(frames)
    with pytest.raises(error.EngineError, match="engine 0 died"):
        ar.get()


def test_futures_interoperate_with_as_completed_and_asyncio(wire):
    ars = [wire.submit(1, single=True) for _ in range(3)]
    for i, ar in enumerate(ars):
        wire.reply(ar.msg_ids[0], i)
    assert sorted(f.result() for f in concurrent.futures.as_completed(ars, timeout=1)) == [0, 1, 2]

    ar = wire.submit(1, single=True)

    async def main():
        fut = asyncio.wrap_future(ar)
        asyncio.get_running_loop().call_later(0.01, wire.reply, ar.msg_ids[0], "late")
        return await fut

    assert asyncio.run(main()) == "late"


def test_map_result_flattens_and_iterates_in_order(wire):
    ar = wire.submit(3, ar_class=AsyncMapResult)
    wire.reply(ar.msg_ids[1], [2, 3])
    wire.reply(ar.msg_ids[0], [0, 1])
    it = iter(ar)
    assert [next(it), next(it), next(it), next(it)] == [0, 1, 2, 3]
    wire.reply(ar.msg_ids[2], [4])
    assert list(it) == [4]
    assert ar.get() == [0, 1, 2, 3, 4] and ar[1:3] == [1, 2]
    empty = AsyncMapResult(wire.inbox, [])
    assert empty.ready() and empty.get() == []


def test_stream_output_accumulates_then_the_reply_copy_wins(wire):
    ar = wire.submit(1, single=True)
    parent = wire.requests[ar.msg_ids[0]]
    for text in ("a\n", "b\n"):
        wire.inbox.on_frames(wire.frames(wire.engine, "stream", {"name": "stdout", "text": text},
                                         parent=parent))
    wire.inbox.on_frames(wire.frames(wire.engine, "stream", {"name": "stderr", "text": "e\n"},
                                     parent=parent))
    assert ar.stdout == "a\nb\n" and ar.stderr == "e\n"
    wire.reply(ar.msg_ids[0], 1, metadata={"stdout": "a\nb\nc\n", "stderr": "e\n"})
    assert ar.stdout == "a\nb\nc\n"
    out = io.StringIO()
    ar.display_outputs(file=out)
    assert out.getvalue() == "[stdout:0]\na\nb\nc\n[stderr:0] e\n"


def test_timings(wire):
    ar = wire.submit(2)
    now = time.time()
    for m in ar.msg_ids:
        wire.reply(m, 1, metadata={"started": now, "completed": now + 0.5})
    assert ar.serial_time == pytest.approx(1.0)
    assert 0 <= ar.wall_time <= ar.elapsed + 1e-6


def test_unsigned_signature_error_fails_only_the_named_future(wire):
    ar, other = wire.submit(1, single=True), wire.submit(1, single=True)
    header = json.dumps({"msg_id": "c1", "msg_type": "signature_error", "session": "ctl"}).encode()
    parent = json.dumps(wire.requests[ar.msg_ids[0]]).encode()
    content = json.dumps({"ename": "SignatureError", "evalue": "bad key"}).encode()
    wire.inbox.on_frames([DELIM, b"", header, parent, b"{}", content])
    with pytest.raises(error.SignatureError, match="bad key"):
        ar.get(0)
    assert not other.done()
    # an unsigned message of any other type carries nothing
    header = json.dumps({"msg_id": "c2", "msg_type": "apply_reply", "session": "ctl"}).encode()
    parent = json.dumps(wire.requests[other.msg_ids[0]]).encode()
    wire.inbox.on_frames([DELIM, b"", header, parent, b"{}", b'{"status":"ok"}'])
    assert not other.done()


def test_bad_frames_are_dropped_and_replays_refused(wire):
    ar = wire.submit(1, single=True)
    wire.inbox.on_frames([b"no delimiter"])
    wire.inbox.on_frames([DELIM, b"sig", b"{"])
    forged = Session(new_key())
    wire.inbox.on_frames(wire.frames(forged, "apply_reply", {"status": "ok"},
                                     parent=wire.requests[ar.msg_ids[0]]))
    assert not ar.done()
    frames = wire.reply(ar.msg_ids[0], 5)
    wire.inbox.on_frames(frames)  # a replay of the same signed frames is dropped
    assert ar.get() == 5


def test_connect_fails_on_a_reply_that_does_not_verify(wire):
    connect = HubRequest("connect_request")
    connect.msg_id = "connect-1"
    wire.inbox.connect_request = connect
    wire.inbox.pending["connect-1"] = connect
    forged = Session(new_key())
    wire.inbox.on_frames(wire.frames(forged, "connect_reply", {"status": "ok"},
                                     parent={"msg_id": "connect-1"}))
    with pytest.raises(error.SignatureError, match="did not verify.*wrong or stale"):
        connect.result(0)


def test_hub_error_replies_become_exceptions(wire):
    request = HubRequest("queue_request")
    wire.inbox.pending["q-1"] = request
    wire.inbox.on_frames(wire.frames(
        wire.controller, "queue_reply",
        {"status": "error", "ename": "EngineError", "evalue": "engine 9 is not registered"},
        parent={"msg_id": "q-1"}))
    with pytest.raises(error.EngineError, match="engine 9"):
        request.result(0)


def test_composite_of_engine_errors_renders():
    e = error.CompositeError("m", [error.EngineError("died"), error.TaskAborted("aborted")])
    assert "EngineError: died" in e.render_traceback()


def test_notifications_keep_ids_sorted(wire):
    inbox = wire.inbox
    inbox.set_engines({"3": {"uuid": "c"}, "1": {"uuid": "a"}})
    assert inbox.ids == [1, 3]
    inbox.on_frames(wire.frames(wire.controller, "registration_notification",
                                {"id": 2, "uuid": "b", "hostname": "h", "pid": 1}))
    inbox.on_frames(wire.frames(wire.controller, "unregistration_notification",
                                {"id": 1, "reason": "exited"}))
    assert inbox.ids == [2, 3] and inbox.engines[2]["hostname"] == "h"


def test_direct_work_an_engine_never_answered_fails_when_it_unregisters(wire):
    """The controller answers only the direct-lane work in the books the engine sent it;
    the rest this client fails itself when the engine's unregistration comes."""
    ar = wire.submit(3, engines=[1, 1, 2])
    for msg_id in ar.msg_ids:
        wire.inbox.metadata[msg_id]["direct"] = True
    wire.reply(ar.msg_ids[0], 5, metadata={"engine_id": 1})
    relayed = wire.submit(1, engines=[1], single=True)  # through the controller: it answers
    wire.inbox.on_frames(wire.frames(wire.controller, "unregistration_notification",
                                     {"id": 1, "reason": "no heartbeat"}))
    assert wire.inbox.results[ar.msg_ids[0]] == 5
    failed = wire.inbox.results[ar.msg_ids[1]]
    assert isinstance(failed, error.EngineError) and "no heartbeat" in str(failed)
    assert ar.msg_ids[2] in wire.inbox.pending and not relayed.ready()
    wire.reply(ar.msg_ids[1], 6)  # a late answer changes nothing
    assert wire.inbox.results[ar.msg_ids[1]] is failed


def test_result_reply_completes_followers_from_verified_stored_replies(wire):
    stranger = Session(KEY)
    req = stranger.header("apply_request")
    stored = wire.frames(wire.engine, "apply_reply", {"status": "ok"}, parent=req,
                         metadata={"engine_id": 4, "stdout": "hi\n"}, buffers=serialize(42))
    ar = AsyncResult(wire.inbox, [req["msg_id"], "pending-one"], fname="get_result")
    assert sorted(wire.inbox.follow(ar, ar.msg_ids)) == sorted(ar.msg_ids)
    signed = [bytes(f) for f in stored[1:]]
    reply = wire.frames(wire.controller, "result_reply",
                        {"status": "ok", "pending": ["pending-one"], "order": [req["msg_id"]],
                         "results": {req["msg_id"]: {"nframes": len(signed),
                                                     "record": {"submitted": 1.0}}}},
                        buffers=signed)
    wire.inbox.absorb_result_reply(wire.client_session.unpack(reply))
    assert ar.progress == 1 and wire.inbox.hub_watch == {"pending-one"}
    assert wire.inbox.metadata[req["msg_id"]]["stdout"] == "hi\n"
    assert wire.inbox.metadata[req["msg_id"]]["submitted"] == 1.0
    assert wire.inbox.results[req["msg_id"]] == 42


def test_fail_all_releases_every_waiter(wire):
    ar = wire.submit(2)
    wire.reply(ar.msg_ids[0], 1)
    wire.inbox.fail_all(error.HpclaunchError("closed"))
    with pytest.raises(error.HpclaunchError, match="closed"):
        ar.get(0)
    assert not wire.inbox.outstanding


def test_text_progress_bar():
    out = io.StringIO()
    bar = TextBar(4, desc="f", width=8, file=out)
    bar.update_to(2)
    bar.close()
    assert "[####....] 2/4 tasks" in out.getvalue() and out.getvalue().endswith("\n")


# -- Client construction without a controller -------------------------------------------


def _connection_file(tmp_path, url):
    path = str(tmp_path / "security" / "client.json")
    write_connection_file(path, {"url": url, "key": new_key(), "signature_scheme": "hmac-sha256"})
    return path


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_controller_times_out_with_advice(tmp_path):
    path = _connection_file(tmp_path, f"tcp://127.0.0.1:{_free_port()}")
    t = time.monotonic()
    with pytest.raises(error.TimeoutError, match=r"no controller answered .* within 0.3 s"):
        hl.Client(url_file=path, timeout=0.3)
    assert time.monotonic() - t < 5


def test_profile_dir_is_found_and_permissions_are_checked(tmp_path):
    path = _connection_file(tmp_path, f"tcp://127.0.0.1:{_free_port()}")
    with pytest.raises(error.TimeoutError):
        hl.Client(profile_dir=str(tmp_path), timeout=0.1)
    os.chmod(path, 0o644)
    with pytest.raises(error.ConnectionFileError, match="chmod 600"):
        hl.Client(url_file=path)


def test_unknown_keywords_are_refused(tmp_path):
    with pytest.raises(TypeError):
        hl.Client(no_such_keyword="login1")
