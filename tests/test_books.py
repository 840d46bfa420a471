"""The books of the direct lane (engine/ledger.py, controller/books.py): engines note the
direct work they read and answer, send the notes in batches, and the controller answers
questions about its books once every engine has sent what it holds."""

import concurrent.futures
import os
import time

import pytest
import zmq

import hpclaunch as hl
from hpclaunch import error
from hpclaunch.controller.books import BOOKS_WAIT, _parse as parse_books
from hpclaunch.engine.ledger import batches as ledger_batches
from hpclaunch.protocol import Session, new_key, paths, read_connection_file
from conftest import wait_until
from standin import stand_in

LEDGER_ID = "stand-in-books"


def test_queries_see_direct_work_while_the_engine_runs_it(start_cluster):
    """A blocking call is booked by the engine's ledger, whose thread answers the controller
    while user code runs; work sent without waiting, which may sit unread behind it, is
    booked by the client's copy at once."""
    cluster, rc = start_cluster(n=1)
    eid = rc.ids[0]
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        blocking = pool.submit(rc[eid].apply_sync, time.sleep, 3)
        wait_until(lambda: rc.history, what="the blocking call sent")
        running = rc.history[0]
        time.sleep(0.3)
        behind = rc[eid].apply_async(time.sleep, 0)
        started = time.monotonic()
        status = rc.queue_status(eid, verbose=True)
        assert time.monotonic() - started < BOOKS_WAIT * 0.8
        assert status["queue"] == [running, *behind.msg_ids]
        other = hl.Client(profile_dir=cluster.profile_dir)
        try:
            assert not other.get_result(running, block=False).ready()
            assert blocking.result(10) is None
            assert other.get_result(running).get(5) is None
        finally:
            other.close()
        behind.get(10)
        assert rc.queue_status(eid) == {"queue": 0, "tasks": 0, "completed": 2}
    finally:
        pool.shutdown()


def _ledger_socket(cluster):
    """The stand-in engine's ledger socket; it says hello once the engine registered."""
    conn = read_connection_file(paths.client_file(cluster.profile_dir))
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    sock.setsockopt(zmq.IDENTITY, LEDGER_ID.encode())
    sock.connect(conn["url"])
    return sock


def _task(as_client, as_engine, fake, stdout="noted\n", reply=True):
    """One direct execute_request (and its reply) as the engine's ledger notes them:
    ``(msg_id, notes)``; ``_books`` makes the books of notes."""
    header, request = as_client.pack("execute_request", {"code": "pass"},
                                     metadata={"engine": fake, "direct": True})
    notes = [(header, None, request[1:])]
    if reply:
        metadata = {"engine_id": fake, "status": "ok", "started": time.time(),
                    "completed": time.time(), "stdout": stdout, "stderr": "", "direct": True}
        _, answer = as_engine.pack("execute_reply", {"status": "ok"}, parent=header,
                                   metadata=metadata)
        notes.append((header, metadata, answer[1:]))
    return header["msg_id"], notes


def _books(notes):
    """The rows and the one buffer of books holding ``notes``, as the ledger sends them."""
    (rows, frames), = ledger_batches(notes)
    return rows, [b"".join(frames)]


def test_a_query_waits_for_the_books_and_bad_books_are_dropped(start_cluster):
    cluster, rc = start_cluster(n=1, hb_period=1.0, hb_liveness=60)
    ledger = _ledger_socket(cluster)
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        with stand_in(cluster, books=LEDGER_ID) as (engine, _client, as_engine, as_client, fake):
            wait_until(lambda: fake in rc.ids, what="the stand-in engine known to the client")
            as_engine.send(ledger, "books", {"id": fake, "answers": []})
            msg_id, notes = _task(as_client, as_engine, fake)
            while True:  # until the controller has read the hello (it came on another socket)
                asked = pool.submit(rc.queue_status, fake)
                if ledger.poll(2000):
                    break
                assert asked.result(5)["completed"] == 0
            token = as_engine.unpack(ledger.recv_multipart()).content["token"]
            time.sleep(0.2)
            assert not asked.done()  # held until this engine sends its books
            rows, buffers = _books(notes)
            assert len(rows["tasks"]) == 1, "a request and its reply in one batch: one row"
            as_engine.send(ledger, "books", {"id": fake, **rows, "answers": [token]},
                           buffers=buffers)
            assert asked.result(5) == {"queue": 0, "tasks": 0, "completed": 1}
            stored = rc.get_result(msg_id)  # finished: answered without asking the engines
            stored.get(5)
            assert stored.metadata["stdout"] == "noted\n"

            bad = []
            for content, sock, session in (
                ({"id": fake, "notes": []}, ledger, as_engine),  # 1.4 books (logged first)
                ({"id": fake, "tasks": "x"}, ledger, as_engine),
                ({"id": fake, "requests": [["m", "execute_request"]]}, ledger, as_engine),
                (None, engine, as_engine),                      # not the ledger's socket
                (None, ledger, Session("not-the-cluster-key")),
            ):
                bad_id, notes = _task(as_client, as_engine, fake)
                bad.append(bad_id)
                rows, buffers = _books(notes)
                if content is None:
                    content = {"id": fake, **rows, "answers": []}
                session.send(sock, "books", content, buffers=buffers)
            bad_id, notes = _task(as_client, as_engine, fake)
            bad.append(bad_id)
            rows, buffers = _books(notes)
            rows["tasks"][0][4][0] += 1                         # the frames do not add up
            as_engine.send(ledger, "books", {"id": fake, **rows}, buffers=buffers)

            started = time.monotonic()   # the stand-in answers no more books_request
            history = rc.hub_history()
            assert BOOKS_WAIT * 0.8 < time.monotonic() - started < BOOKS_WAIT + 3
            assert msg_id in history and not set(bad) & set(history)
            assert rc.queue_status(fake)["completed"] == 1
            log = os.path.join(paths.logs_dir(cluster.profile_dir), "controller.log")
            with open(log) as f:
                assert "come from a protocol 1.4 engine" in f.read()
    finally:
        pool.shutdown()
        ledger.close()


def test_books_of_an_engine_already_gone_are_kept(start_cluster):
    """Books can arrive after the engine's unregistration (they travel on another socket):
    results are kept, work it never answered fails with EngineError."""
    cluster, rc = start_cluster(n=1, hb_period=1.0, hb_liveness=60)
    ledger = _ledger_socket(cluster)
    try:
        with stand_in(cluster, books=LEDGER_ID) as (engine, _client, as_engine, as_client, fake):
            wait_until(lambda: fake in rc.ids, what="the stand-in engine known to the client")
            as_engine.send(engine, "unregistration_request", {"id": fake})
            wait_until(lambda: fake not in rc.ids, what="the stand-in engine gone")
            done_id, notes = _task(as_client, as_engine, fake, stdout="late\n")
            lost_id, lost_notes = _task(as_client, as_engine, fake, reply=False)
            rows, buffers = _books(notes + lost_notes)
            as_engine.send(ledger, "books", {"id": fake, **rows}, buffers=buffers)
            done = rc.get_result(done_id)
            done.get(5)
            assert done.metadata["stdout"] == "late\n"
            with pytest.raises(error.EngineError, match=f"engine {fake} is gone"):
                rc.get_result(lost_id).get(5)
    finally:
        ledger.close()


def _books_message(content, buffer):
    session = Session(new_key())
    _, frames = session.pack("books", content, buffers=[buffer] if buffer is not None else [])
    return session.unpack([b"books-x", *frames])


@pytest.mark.parametrize("bad_row, why", [
    (["m", "apply_request", "s", 1.0], "bad row"),                         # too short
    (["m", "apply_request", "s", "yesterday", [1] * 5], "bad row"),        # a text date
    (["m", "apply_request", "s", 1.0, [1, 1, 1, 1, True]], "bad frame sizes"),
    (["m", "apply_request", "s", 1.0, [1, 1, 1, 1, -1]], "bad frame sizes"),
    (["m", "apply_request", "s", 1.0, [1, 1, 1, 1.0, 1]], "bad frame sizes"),
    (["m", "apply_request", "s", 1.0, [1, 1, 1, 1]], "bad frame sizes"),    # < 5 frames
    (None, "is not a list"),                    # "requests" itself is not a list
])
def test_malformed_rows_are_refused_before_anything_is_booked(bad_row, why):
    good = ["g", "apply_request", "s", None, [1] * 5]
    content = {"id": 1, "requests": [good, bad_row] if bad_row is not None else "rows"}
    with pytest.raises(error.ProtocolError, match=why):
        parse_books(_books_message(content, b"x" * 10))
    assert parse_books(_books_message({"id": 1, "requests": [good]}, b"x" * 5))[1] == [good]
    with pytest.raises(error.ProtocolError, match="add up to 5 bytes"):
        parse_books(_books_message({"id": 1, "requests": [good]}, b"x" * 6))
