"""Engines draining before their batch job's walltime ends, on a real local cluster.

The draining engine is a real ``python -m hpclaunch.engine --drain-at T`` process, as a
job template starts it; the other engine is the cluster's own.
"""

import contextlib
import os
import subprocess
import sys
import time

import pytest

from hpclaunch import error
from hpclaunch.protocol import Session, paths, read_connection_file
from conftest import wait_until
from remote_helpers import sleep_then
from standin import stand_in


@contextlib.contextmanager
def draining_engine(cluster, rc, log_path, seconds):
    """Next to the cluster's one engine (the keeper), a real engine process that drains
    ``seconds`` from now; yields (keeper id, its id, drain time, process)."""
    (keeper,) = rc.ids
    drain_at = time.time() + seconds
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hpclaunch.engine", "--file",
             paths.engine_file(cluster.profile_dir), "--drain-at", str(drain_at)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        rc.wait_for_engines(2, timeout=30)
        (drainer,) = [i for i in rc.ids if i != keeper]
        yield keeper, drainer, drain_at, proc
    finally:
        proc.kill()
        proc.wait()


def read(path):
    with open(path) as f:
        return f.read()


def controller_log(cluster):
    return read(os.path.join(paths.logs_dir(cluster.profile_dir), "controller.log"))


@pytest.fixture
def drain_log(tmp_path):
    return str(tmp_path / "draining-engine.log")


def test_drain_finishes_the_running_task_and_moves_the_queued_ones(start_cluster, drain_log):
    cluster, rc = start_cluster(n=1, controller_args=["--hwm", "3"])
    with draining_engine(cluster, rc, drain_log, 6) as (keeper, drainer, drain_at, proc):
        assert rc.engines[drainer]["drain_at"] == drain_at
        assert time.time() < drain_at - 1, "the engine took too long to register"
        # three direct tasks fill the keeper up to the hwm, so the load-balanced scheduler
        # sends the long task and two more to the draining engine; the rest wait
        blockers = [rc[keeper].apply_async(sleep_then, 1.0, f"b{i}") for i in range(3)]
        lv = rc.load_balanced_view()
        assert lv.retries == 0, "a given-back task must not need a retry"
        long_task = lv.apply_async(sleep_then, drain_at + 2 - time.time(), "long")
        queued = [lv.apply_async(sleep_then, 0.2, i) for i in range(6)]

        wait_until(lambda: "draining" in read(drain_log), drain_at - time.time() + 5,
                   "the engine to announce its drain")
        too_late = rc[drainer].apply_async(sleep_then, 0, "too late")
        with pytest.raises(error.EngineDraining) as refused:
            too_late.get(timeout=10)
        assert isinstance(refused.value, error.EngineError)
        assert f"engine {drainer} " in str(refused.value)
        assert "draining before its batch job's walltime ends" in str(refused.value)
        assert not long_task.done(), "the long task still runs on the draining engine"

        assert long_task.get(timeout=30) == "long"
        assert [ar.get(timeout=30) for ar in queued] == list(range(6))
        assert [ar.get(timeout=30) for ar in blockers] == ["b0", "b1", "b2"]
        assert long_task.metadata["engine_id"] == drainer
        assert {ar.metadata["engine_id"] for ar in queued} == {keeper}, \
            "the tasks queued on the draining engine ran on the other one"
        assert all(ar.metadata["status"] == "ok" for ar in [long_task, *queued])

        wait_until(lambda: drainer not in rc.ids, 20, "the drained engine to leave rc.ids")
        assert proc.wait(timeout=20) == 0
        log = read(drain_log)
        assert "queued tasks go back to the controller" in log
        assert "drained before the batch job's walltime ends" in log
        text = controller_log(cluster)
        assert f"engine {drainer} " in text and "is draining" in text
        assert "2 load-balanced task(s) given back to the scheduler" in text
        assert "drained before its batch job's walltime ends" in text
        assert rc.queue_status()["unassigned"] == 0
        failed = rc.db_query({"status": "error"}, keys=["engine_id"])
        assert failed == [{"msg_id": too_late.msg_ids[0], "engine_id": drainer}], \
            "only the direct task sent after the drain failed"


def test_idle_engine_drains_at_its_time_and_is_explained_after(start_cluster, drain_log):
    cluster, rc = start_cluster(n=1)
    with draining_engine(cluster, rc, drain_log, 2) as (keeper, drainer, drain_at, proc):
        wait_until(lambda: len(rc.ids) == 1, 20, "the idle engine to drain and leave")
        assert time.time() >= drain_at
        assert proc.wait(timeout=20) == 0
        # a request that still names it (from a client that missed the notification)
        conn = read_connection_file(paths.client_file(cluster.profile_dir))
        reply = raw_request(conn, "apply_request", {}, {"engine": drainer})
        assert reply.content["ename"] == "EngineError"
        assert f"engine {drainer} is not registered: it left (it drained before its batch " \
               "job's walltime ends" in reply.content["evalue"]
        assert rc[:].apply_sync(lambda: 7) == [7]
        assert rc.ids == [keeper]


def raw_request(conn, msg_type, content, metadata):
    """One signed request from a fresh client socket; its reply."""
    import zmq

    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    sock.connect(conn["url"])
    try:
        session = Session(conn["key"])
        session.send(sock, "connect_request", {})
        assert session.unpack(sock.recv_multipart()).msg_type == "connect_reply"
        session.send(sock, msg_type, content, metadata=metadata)
        return session.unpack(sock.recv_multipart())
    finally:
        sock.close()


def test_malformed_drain_requests_are_dropped(start_cluster):
    """A stand-in engine (a raw socket that registered) sends bad drain_requests; a client
    socket sends one too. The controller drops them all, keeps sending the engine work,
    and still drains it on a good one."""
    cluster, rc = start_cluster(n=1, hb_period=1.0, hb_liveness=60)
    with stand_in(cluster) as (engine, client, as_engine, as_client, fake):
        as_client.send(client, "connect_request", {})
        assert as_client.unpack(client.recv_multipart()).msg_type == "connect_reply"

        for content in ([], {"id": fake, "running": "m1"}, {"id": fake + 100, "running": []},
                        {"id": fake, "drain_at": "soon"}, {"id": fake, "running": [1, 2]}):
            as_engine.send(engine, "drain_request", content)
        header = as_engine.header("drain_request")
        body = [json_bytes(header), b"{}", b"{}", b"not json"]
        engine.send_multipart([b"<IDS|MSG>", as_engine.sign(body), *body])
        as_client.send(client, "drain_request", {"id": fake, "running": []})

        # still an ordinary engine: a direct task reaches it
        sent = as_client.send(client, "apply_request", {}, metadata={"engine": fake})
        forwarded = as_engine.unpack(engine.recv_multipart(), content=False, buffers=False)
        assert forwarded.msg_id == sent["msg_id"]
        # a good drain_request takes that unstarted task back: the client gets EngineDraining
        as_engine.send(engine, "drain_request", {"id": fake, "drain_at": time.time(),
                                                 "running": []})
        reply = as_client.unpack(client.recv_multipart())
        assert reply.parent["msg_id"] == sent["msg_id"]
        assert reply.content["ename"] == "EngineDraining"
        assert f"engine {fake} (nowhere pid 1) is draining" in reply.content["evalue"]
        as_engine.send(engine, "unregistration_request", {"id": fake})
        wait_until(lambda: fake not in rc.ids, 10, "the stand-in engine to leave")

        log = controller_log(cluster)
        assert "malformed drain_request" in log
        assert "drain_request from a socket that is not a registered engine" in log
        assert rc[:].apply_sync(lambda: 6 * 7) == [42]


def json_bytes(obj):
    import json

    return json.dumps(obj, separators=(",", ":")).encode()
