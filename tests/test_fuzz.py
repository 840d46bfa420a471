"""Hostile traffic with a fixed budget while a correct client keeps working.

The controller's one socket gets >= 10,000 hostile messages of every kind the
protocol must survive; an engine gets >= 10,000 signed requests it cannot serve
(they pass the controller's checks, so the engine itself must cope). Throughout,
a correct client runs tasks and checks each result. Afterwards: every process is
alive, memory grew by a bounded amount, each correct task was right, and the
controller logged its rejections rate-limited, not once per message.
"""

import os
import random
import threading
import time

import psutil
import pytest
import zmq

from hpclaunch.protocol import DELIM, Session, json_frame, new_key, paths, read_connection_file
from remote_helpers import square

pytestmark = pytest.mark.slow

N_HOSTILE = 10_000


class Worker(threading.Thread):
    """A correct client's load-balanced tasks, checked one by one, until stopped."""

    def __init__(self, rc):
        super().__init__(daemon=True)
        self.lview = rc.load_balanced_view()
        self.stop = threading.Event()
        self.done = 0
        self.wrong = []

    def run(self):
        i = 0
        while not self.stop.is_set():
            ar = self.lview.map_async(square, range(i, i + 20), chunksize=1)
            got = ar.get(timeout=60)
            if got != [x * x for x in range(i, i + 20)]:
                self.wrong.append((i, got))
            self.done += 20
            i += 20


def hostile_messages(key, rng):
    """An endless mix of what a hostile or broken peer sends."""
    good = Session(key, check_replay=False)
    stranger = Session(new_key())
    _, signed = good.pack("history_request", {})
    signed = signed[1:]   # without the delimiter
    kinds = [
        lambda: [rng.randbytes(rng.randrange(1, 200)) for _ in range(rng.randrange(1, 9))],
        lambda: [DELIM] + signed[: rng.randrange(0, 4)],                          # truncated
        lambda: [DELIM, signed[0]] + rng.sample(signed[1:], len(signed) - 1),     # reordered
        lambda: stranger.pack("queue_request", {})[1],                             # wrong key
        lambda: [DELIM] + signed,                                                  # replayed
        lambda: [DELIM, b""] + signed[1:],                                         # unsigned
        lambda: good.pack(f"no_such_{rng.randrange(99)}_request", {})[1],         # unknown type
        lambda: _signed_raw(good, [b"[1, 2]", b"{}", b"{}", b"{}"]),              # not an object
        lambda: _signed_raw(good, [json_frame({"msg_type": 3}), b"{}", b"{}", b"{}"]),
        lambda: [DELIM, b"ab" * 64] + signed[1:] + [b"x"] * 500,                  # many buffers
    ]
    while True:
        yield rng.choice(kinds)()


def oversized(key):
    """Headers over the 16 MiB JSON limit (signed, so only the size check stops them) and a
    2 MiB header with a bad signature. Few: each is large."""
    good = Session(key, check_replay=False)
    huge = b'{"msg_type": "' + b"x" * (17 << 20) + b'"}'
    for _ in range(2):
        yield _signed_raw(good, [huge, b"{}", b"{}", b"{}"])
    yield [DELIM, b"cd" * 32, b"{" + b" " * (2 << 20) + b"}", b"{}", b"{}", b"{}"]


def _signed_raw(session, body):
    return [DELIM, session.sign(body), *body]


def bad_engine_requests(key, engine_id, rng):
    """Signed requests the controller forwards but no engine can serve."""
    session = Session(key)
    md = {"engine": engine_id}
    kinds = [
        lambda: session.pack("apply_request", {}, metadata=md, buffers=[rng.randbytes(64)])[1],
        lambda: session.pack("apply_request", {}, metadata=md)[1],                 # no buffers
        lambda: session.pack("pull_request", {"names": 7}, metadata=md)[1],
        lambda: session.pack("pull_request", {"names": ["no_such_name"]}, metadata=md)[1],
        lambda: session.pack("execute_request", {"code": 12}, metadata=md)[1],
        lambda: session.pack("execute_request", {"code": "1/0"}, metadata=md)[1],
        lambda: session.pack("push_request", {}, metadata=md, buffers=[b"\x80\x05K\x01."])[1],
        lambda: session.pack("abort_request", {"msg_ids": "all"}, metadata=md)[1],
    ]
    while True:
        yield rng.choice(kinds)()


@pytest.fixture
def fuzz_cluster(start_cluster):
    cluster, rc = start_cluster(n=2)
    info = read_connection_file(paths.client_file(cluster.profile_dir))
    procs = [psutil.Process(cluster.controller_pid)] + [psutil.Process(p) for p in cluster.engine_pids]
    return cluster, rc, info, procs


def raw_dealer(url):
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.connect(url)
    return sock


def rss_mb(procs):
    return [p.memory_info().rss / 1e6 for p in procs]


def run_with_worker(rc, send_all):
    worker = Worker(rc)
    worker.start()
    try:
        send_all()
        time.sleep(1.0)
    finally:
        worker.stop.set()
        worker.join(90)
    assert not worker.is_alive(), "the correct client's tasks stopped completing"
    assert worker.wrong == []
    assert worker.done > 0
    return worker


def test_controller_survives_hostile_flood(fuzz_cluster):
    cluster, rc, info, procs = fuzz_cluster
    before = rss_mb(procs)
    sock = raw_dealer(info["url"])
    messages = hostile_messages(info["key"], random.Random(2026))

    def send_all():
        for _ in range(N_HOSTILE):
            sock.send_multipart(next(messages))
        for frames in oversized(info["key"]):
            sock.send_multipart(frames)

    worker = run_with_worker(rc, send_all)
    sock.close()
    assert all(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in procs)
    grown = [a - b for a, b in zip(rss_mb(procs), before)]
    print(f"\ncontroller flood: {N_HOSTILE} hostile messages, {worker.done} correct tasks, "
          f"RSS growth (controller, engines) {[round(g, 1) for g in grown]} MB")
    assert max(grown) < 100, f"memory grew by {grown} MB"
    assert rc[:].apply_sync(square, 12) == [144, 144]

    log = open(os.path.join(paths.logs_dir(cluster.profile_dir), "controller.log")).read()
    rejected = log.count("rejected a message")
    print(f"controller log: {rejected} rate-limited rejection lines")
    assert 0 < rejected < 100, f"{rejected} rejection lines for {N_HOSTILE} hostile messages"
    assert info["key"].decode() not in log


def test_engine_survives_bad_requests(fuzz_cluster):
    cluster, rc, info, procs = fuzz_cluster
    target = rc.ids[0]
    sock = raw_dealer(info["url"])
    session = Session(info["key"])
    session.send(sock, "connect_request", {})
    requests = bad_engine_requests(info["key"], target, random.Random(7))
    answered = []

    def send_all():
        for _ in range(N_HOSTILE):
            sock.send_multipart(next(requests))
        deadline = time.monotonic() + 90
        while len(answered) < N_HOSTILE and time.monotonic() < deadline:
            if sock.poll(1000):
                msg = session.unpack(sock.recv_multipart(), content=True)
                if msg.msg_type.endswith("_reply") and msg.msg_type != "connect_reply":
                    answered.append(msg.content["status"])

    worker = run_with_worker(rc, send_all)
    sock.close()
    print(f"\nengine flood: {len(answered)} bad requests answered "
          f"({answered.count('error')} errors), {worker.done} correct tasks meanwhile")
    assert len(answered) == N_HOSTILE, "every bad request gets an answer, none is lost"
    assert set(answered) <= {"ok", "error", "aborted"} and "error" in answered
    assert all(p.is_running() for p in procs)
    assert rc[target].apply_sync(square, 9) == 81
