"""Big buffers on the direct lane travel as part messages (protocol/stream.py): they come
back as the message that was signed, interleaved streams stay apart, and anything that
does not fit is dropped and reported while the next message is still served."""

import struct

import numpy as np
import pytest
import zmq

from hpclaunch.protocol import DELIM, Session, new_key, recv_frames, send_frames
from hpclaunch.protocol.stream import (
    PART,
    PART_SIZE,
    STREAM,
    STREAM_MIN,
    Reassembler,
    send_message,
)

KEY = new_key()


@pytest.fixture
def wire():
    """A ROUTER (the receiving end), two DEALERs sending to it, and what was reported."""
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealers = []
    for _ in range(2):
        d = ctx.socket(zmq.DEALER)
        d.setsockopt(zmq.LINGER, 0)
        d.connect(f"tcp://127.0.0.1:{port}")
        dealers.append(d)
    router.setsockopt(zmq.RCVTIMEO, 10_000)
    bad = []
    yield router, dealers, Reassembler(lambda summary, detail: bad.append(summary)), bad
    for s in [router, *dealers]:
        s.close(linger=0)
    ctx.term()


def receive(router, streams, count):
    """The next ``count`` whole messages, as the lane's readers get them."""
    whole = []
    while len(whole) < count:
        frames = streams.feed(recv_frames(router))
        if frames is not None:
            whole.append(frames)
    return whole


def signed_message(session, *buffers):
    _, frames = session.pack("push_request", {"n": len(buffers)}, buffers=list(buffers))
    return frames


def test_a_streamed_message_comes_back_whole_and_verifies(wire):
    router, (dealer, _), streams, bad = wire
    big = np.random.default_rng(1).random((STREAM_MIN + PART_SIZE // 2) // 8)
    odd = b"\x07" * (STREAM_MIN + 5)  # a short last part
    frames = signed_message(Session(KEY), b"pickle", memoryview(big), b"small", odd)
    send_message(dealer, [], frames)

    (got,) = receive(router, streams, 1)
    msg = Session(KEY).unpack(got)
    assert [bytes(b) for b in msg.buffers] == [b"pickle", big.tobytes(), b"small", odd]
    assert np.frombuffer(msg.buffers[1], dtype=np.float64).tolist() == big.tolist()
    assert bad == []


def test_plain_messages_pass_untouched(wire):
    router, (dealer, _), streams, bad = wire
    send_message(dealer, [], signed_message(Session(KEY), b"x" * (STREAM_MIN - 1)))
    frames = recv_frames(router)
    assert len(frames) == 1 + 1 + 5 + 1  # routing id, delimiter, sig + JSON, the buffer
    assert streams.feed(frames) is frames and bad == []


def test_streams_of_two_senders_interleave_and_stay_apart(wire):
    router, dealers, streams, bad = wire
    payloads = [bytes([i + 1]) * (3 * PART_SIZE + i) for i in range(2)]
    sessions = [Session(KEY) for _ in dealers]
    messages = [signed_message(s, b"p", p) for s, p in zip(sessions, payloads)]
    # the first sender is half-way through when the second sends its whole message
    layout, parts = _stream_of(messages[0])
    send_frames(dealers[0], [STREAM, layout])
    send_frames(dealers[0], [PART, parts[0]])
    send_message(dealers[1], [], messages[1])
    for part in parts[1:]:
        send_frames(dealers[0], [PART, part])
    send_frames(dealers[0], messages[0][:-1])

    got = receive(router, streams, 2)
    by_size = sorted((bytes(Session(KEY).unpack(f).buffers[1]) for f in got), key=len)
    assert by_size == payloads and bad == []


def _stream_of(frames):
    """The layout and parts ``send_message`` makes of ``frames`` whose last buffer streams."""
    data = bytes(frames[-1])
    layout = struct.pack(">QQ", len(frames) - 2, len(data))
    return layout, [data[i:i + PART_SIZE] for i in range(0, len(data), PART_SIZE)]


def _layout(*pairs):
    return b"".join(struct.pack(">QQ", p, s) for p, s in pairs)


@pytest.mark.parametrize("frames, reported", [
    ([PART, b"lost"], "dropped a part of no stream"),
    ([STREAM, b""], "dropped a stream with a bad layout"),
    ([STREAM, b"\x00" * 17], "dropped a stream with a bad layout"),
    ([STREAM, _layout((4, 10))], "dropped a stream with a bad layout"),         # over content
    ([STREAM, _layout((5, 0))], "dropped a stream with a bad layout"),          # empty
    ([STREAM, _layout((6, 10), (5, 10))], "dropped a stream with a bad layout"),  # not rising
    ([STREAM, _layout((5, 1 << 41))], "dropped a stream with a bad layout"),    # absurd size
    ([STREAM, _layout((5, 10)), b"extra"], "dropped a malformed stream message"),
])
def test_bad_stream_messages_are_dropped_and_the_next_message_served(wire, frames, reported):
    router, (dealer, _), streams, bad = wire
    send_frames(dealer, frames)
    good = signed_message(Session(KEY), b"fine")
    send_frames(dealer, good)
    (got,) = receive(router, streams, 1)
    assert bytes(Session(KEY).unpack(got).buffers[0]) == b"fine"
    assert bad == [reported]


def test_a_stream_that_overflows_or_is_unfinished_is_dropped(wire):
    router, (dealer, _), streams, bad = wire
    good = signed_message(Session(KEY), b"fine")
    # a part bigger than the layout said
    send_frames(dealer, [STREAM, _layout((5, 10))])
    send_frames(dealer, [PART, b"x" * 11])
    # the message before its buffers are complete: dropped, not handed on short
    send_frames(dealer, [STREAM, _layout((5, 10))])
    send_frames(dealer, [PART, b"x" * 4])
    send_frames(dealer, good)
    # a new stream while one is unfinished: the old one goes
    send_frames(dealer, [STREAM, _layout((5, 10))])
    send_frames(dealer, [STREAM, _layout((5, 4))])
    send_frames(dealer, [PART, b"fine"])
    send_frames(dealer, good[:-1])
    (got,) = receive(router, streams, 1)
    assert bytes(Session(KEY).unpack(got).buffers[0]) == b"fine"
    assert bad == ["dropped a stream", "dropped a message", "dropped an unfinished stream"]


def test_a_streamed_buffer_that_was_changed_fails_verification(wire):
    router, (dealer, _), streams, bad = wire
    frames = signed_message(Session(KEY), b"p", b"\x01" * (2 * PART_SIZE))
    layout, parts = _stream_of(frames)
    send_frames(dealer, [STREAM, layout])
    send_frames(dealer, [PART, parts[0]])
    send_frames(dealer, [PART, b"\x02" + parts[1][1:]])
    send_frames(dealer, frames[:-1])
    (got,) = receive(router, streams, 1)
    with pytest.raises(Exception, match="signature did not verify"):
        Session(KEY).unpack(got)
    assert got[1].bytes == DELIM and bad == []
