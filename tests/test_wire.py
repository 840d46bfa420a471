"""Hostile and malformed input to a real controller, while a real client keeps working.

Every test sends raw frames with its own zmq socket to the controller's one
port, then checks that the controller is still up and that a correct client's
work still completes with the right result.
"""

import os
import time

import pytest
import zmq

from hpclaunch import error
from hpclaunch.protocol import DELIM, Session, json_frame, new_key, paths, read_connection_file


@pytest.fixture(scope="module")
def conn(local_cluster):
    return read_connection_file(paths.client_file(local_cluster.profile_dir))


@pytest.fixture
def raw(conn):
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 3000)
    sock.connect(conn["url"])
    yield sock
    sock.close()


def connected(conn, raw):
    """A correctly keyed Session whose replies the controller routes to ``raw``."""
    session = Session(conn["key"])
    session.send(raw, "connect_request", {})
    assert session.unpack(raw.recv_multipart()).msg_type == "connect_reply"
    return session


def still_serving(rc):
    """The controller answers and engines still compute the right values."""
    assert rc[:].apply_sync(lambda x: x * 2, 21) == [42] * len(rc.ids)
    assert rc.queue_status()["unassigned"] == 0


def header(msg_type="apply_request"):
    return {"msg_id": "m1", "msg_type": msg_type, "session": "s", "username": "u",
            "date": time.time(), "version": "1.0"}


def test_connection_files_are_private(local_cluster):
    sec = paths.security_dir(local_cluster.profile_dir)
    assert os.stat(sec).st_mode & 0o777 == 0o700
    for name in ("client.json", "engine.json"):
        assert os.stat(os.path.join(sec, name)).st_mode & 0o777 == 0o600


def test_garbage_frames_are_dropped(rc, raw):
    bodies = [
        [b"random bytes"],
        [DELIM],
        [DELIM, b"sig"],
        [DELIM, b"", b"{}", b"{}", b"{}", b"{}"],                     # unsigned
        [DELIM, b"00" * 32, b"not json", b"{}", b"{}", b"{}"],         # bad signature
        [b"\x00hb", b"ping", b"extra"],                                # fake heartbeat
        [b"\x00hb", b"1"],                                             # pong from a stranger
        [DELIM] + [b"x"] * 200,                                        # many frames
    ]
    for frames in bodies:
        raw.send_multipart(frames)
    still_serving(rc)


def test_wrong_key_gets_a_signature_error(conn, raw, rc):
    bad = Session(new_key())
    bad.send(raw, "connect_request", {})
    frames = raw.recv_multipart()
    assert frames[0] == DELIM and frames[1] == b"", "the refusal is unsigned"
    assert b"SignatureError" in frames[-1]
    still_serving(rc)


def test_wrong_key_client_fails_clearly(local_cluster, tmp_path):
    import json

    import hpclaunch as hl

    info = dict(read_connection_file(paths.client_file(local_cluster.profile_dir)))
    info["key"] = new_key().decode()
    path = tmp_path / "client.json"
    path.write_text(json.dumps(info))
    path.chmod(0o600)
    with pytest.raises(error.SignatureError, match="key"):
        hl.Client(url_file=str(path), timeout=5)


def test_replayed_request_is_rejected(conn, raw, rc):
    session = Session(conn["key"])
    session.send(raw, "connect_request", {})
    assert session.unpack(raw.recv_multipart()).msg_type == "connect_reply"
    _, frames = session.pack("history_request", {})
    raw.send_multipart(frames)
    assert session.unpack(raw.recv_multipart()).msg_type == "history_reply"
    raw.send_multipart(frames)        # the very same signed frames again
    refusal = raw.recv_multipart()    # not served: an unsigned refusal naming the replay
    assert refusal[1] == b"" and b"replayed" in refusal[-1]
    with pytest.raises(zmq.Again):
        raw.recv_multipart()          # and nothing else
    still_serving(rc)


def test_unknown_msg_type_gets_an_error_reply(conn, raw, rc):
    session = connected(conn, raw)
    session.send(raw, "make_coffee", {})
    reply = session.unpack(raw.recv_multipart())
    assert reply.msg_type == "error_reply"
    assert reply.content["ename"] == "ProtocolError" and "make_coffee" in reply.content["evalue"]
    still_serving(rc)


def test_json_that_is_not_an_object(conn, raw, rc):
    session = Session(conn["key"])
    body = [json_frame(header()), b"[1, 2]", b"{}", b"{}"]
    raw.send_multipart([DELIM, session.sign(body)] + body)
    body = [b"[]", b"{}", b"{}", b"{}"]
    raw.send_multipart([DELIM, session.sign(body)] + body)
    still_serving(rc)


def test_request_for_unknown_engine_fails_at_once(conn, raw, rc):
    with pytest.raises(IndexError, match="99"):
        rc.direct_view(99)                       # the client checks first ...
    session = connected(conn, raw)              # ... and the controller too
    session.send(raw, "apply_request", {}, metadata={"engine": 99})
    reply = session.unpack(raw.recv_multipart())
    assert reply.msg_type == "apply_reply"
    assert reply.content["ename"] == "EngineError" and "99" in reply.content["evalue"]


def test_hostile_flood_keeps_serving(conn, raw, rc):
    """A burst of mixed hostile messages; the controller stays up and exact."""
    import random

    rng = random.Random(7)
    session = Session(conn["key"])
    _, signed = session.pack("history_request", {})
    for i in range(2000):
        kind = i % 5
        if kind == 0:
            frames = [rng.randbytes(rng.randrange(1, 64)) for _ in range(rng.randrange(1, 8))]
        elif kind == 1:
            frames = signed[: rng.randrange(1, len(signed))]         # truncated
        elif kind == 2:
            frames = [DELIM, signed[1]] + signed[2:][::-1]            # reordered
        elif kind == 3:
            frames = [DELIM, b"ab" * 32] + signed[2:]                  # bad signature
        else:
            frames = signed                                          # replayed
        raw.send_multipart(frames)
    still_serving(rc)


def test_control_request_without_engine_is_refused(conn, raw, rc):
    session = connected(conn, raw)
    session.send(raw, "clear_request", {})
    reply = session.unpack(raw.recv_multipart())
    assert reply.msg_type == "clear_reply" and reply.content["ename"] == "ProtocolError"
    still_serving(rc)
