"""JSON frames, reply parents and small results: the fast paths say exactly what json and
cloudpickle would have said."""

import datetime
import io
import json
import math

import cloudpickle
import pytest
import zmq

from hpclaunch.error import ProtocolError
from hpclaunch.protocol import (
    DELIM,
    Session,
    deserialize,
    json_frame,
    new_key,
    recv_frames,
    send_frames,
    serialize,
)
from hpclaunch.protocol.session import _loads

REFERENCE = json.JSONEncoder(separators=(",", ":"), default=str)


@pytest.mark.parametrize("obj", [
    {},
    {"msg_id": "a_1", "date": 1795310167.8812053, "n": None, "ok": True, "version": "1.1"},
    {"text": 'é☃\n"q\\', "nested": {"list": [1, 2.5, [], {}], "empty": {}}, "t": (1, 2)},
    {1: "int key", 2.5: "float key", None: "none key", False: "bool key"},
    {"when": datetime.datetime(2020, 1, 2, 3, 4, 5), "raw": b"xy"},  # default=str
    {"inf": math.inf, "small": 1.5e-7, "big": 10 ** 30},
])
def test_json_frames_are_the_compact_json_encoding(obj):
    frame = json_frame(obj)
    assert frame == REFERENCE.encode(obj).encode()
    assert parse(frame) == json.loads(frame)


def parse(frame):
    """A frame parsed the way unpack parses header, parent, metadata and content."""
    return _loads(frame)


@pytest.mark.parametrize("session, username, msg_type", [
    (None, None, "apply_request"),
    ('s"1\\', "jürgen ☃", "odd\ttype\u2603"),
])
def test_the_header_frame_of_a_packed_message_is_its_json(session, username, msg_type):
    packer = Session(new_key(), session=session, username=username)
    for _ in range(2):
        header, frames = packer.pack(msg_type)
        assert frames[2] == json_frame(header)
    packer.username = "someone else"
    header, frames = packer.pack(msg_type)
    assert frames[2] == json_frame(header) and json.loads(frames[2])["username"] == "someone else"


def test_a_cycle_is_refused_as_json_refuses_it():
    looped = {}
    looped["self"] = looped
    with pytest.raises(ValueError, match="Circular reference"):
        json_frame(looped)


@pytest.mark.parametrize("frame, parsed", [
    (b"{}", {}),
    (b' {"a": 1} ', {"a": 1}),
    (b'{"a":{"b":[1,{}]}}', {"a": {"b": [1, {}]}}),
])
def test_frames_with_whitespace_or_nesting_parse(frame, parsed):
    assert parse(frame) == parsed


@pytest.mark.parametrize("frame, why", [
    (b'{"a":1}x', "Extra data"),
    (b'{"a":', "Expecting value"),
    (b"", "Expecting value"),
    (b"\xff{}", "can't decode"),
    (b"[1]", "JSON list, expected an object"),
    (b"null", "JSON NoneType"),
])
def test_frames_that_are_not_json_objects_are_protocol_errors(frame, why):
    with pytest.raises(ProtocolError, match=why):
        parse(frame)


def test_each_parsed_empty_frame_is_a_new_dict():
    first = parse(b"{}")
    first["x"] = 1
    assert parse(b"{}") == {}


def test_a_reply_carries_its_request_header_frame_as_received():
    """Byte for byte, even when the requester's JSON is not compact: the reply does not
    encode the request's header again."""
    ctx = zmq.Context()
    router, dealer = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    try:
        port = router.bind_to_random_port("tcp://127.0.0.1")
        dealer.connect(f"tcp://127.0.0.1:{port}")
        key = new_key()
        client, engine = Session(key), Session(key)
        body = [b'{"msg_id": "m1", "msg_type": "apply_request", "session": "s"}', b"{}", b"{}", b"{}"]
        send_frames(dealer, [DELIM, client.sign(body), *body])
        request = engine.unpack(recv_frames(router))
        engine.send(router, "apply_reply", {"status": "ok"}, parent=request, ident=request.idents)
        frames = recv_frames(dealer)
        reply = client.unpack(frames)
        assert reply.parent == {"msg_id": "m1", "msg_type": "apply_request", "session": "s"}
        assert frames[3].bytes == body[0]
    finally:
        dealer.close(linger=0)
        router.close(linger=0)
        ctx.term()


@pytest.mark.parametrize("value", [None, True, False, 0, -7, 2 ** 100, 1.5, math.inf, 1j, "",
                                   "é" * 100_000])
def test_plain_results_pickle_as_cloudpickle_pickles_them(value):
    reference = io.BytesIO()
    cloudpickle.CloudPickler(reference, protocol=5).dump(value)
    frames = serialize(value)
    assert [bytes(f) for f in frames] == [reference.getvalue()]
    assert deserialize(frames) == value


def test_subclasses_of_plain_types_still_go_through_cloudpickle():
    frames = serialize(Flag(3))
    assert type(deserialize(frames)) is Flag and deserialize(frames) == 3


class Flag(int):
    """An int subclass: pickled by reference to this class, as before."""
