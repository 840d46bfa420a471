"""Big buffers on the direct lane travel as part messages (protocol/stream.py): they come
back as the message that was signed, checked part by part, interleaved streams stay apart,
and anything that does not fit or verify is dropped and reported while the next message is
still served."""

import struct
import time

import numpy as np
import pytest
import zmq

from hpclaunch.protocol import DELIM, Session, new_key, recv_frames, send_frames
from hpclaunch.protocol import recvpool
from hpclaunch.protocol import stream as stream_module
from hpclaunch.protocol.session import MAX_VOUCHED
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
    yield router, dealers, Reassembler(lambda summary, detail: bad.append(summary),
                                       Session(KEY)), bad
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
    send_message(dealer, [], frames, None)  # (signed already: sent with its signature)

    (got,) = receive(router, streams, 1)
    msg = Session(KEY).unpack(got)
    assert [bytes(b) for b in msg.buffers] == [b"pickle", big.tobytes(), b"small", odd]
    assert np.frombuffer(msg.buffers[1], dtype=np.float64).tolist() == big.tolist()
    assert bad == []


def test_plain_messages_pass_untouched(wire):
    router, (dealer, _), streams, bad = wire
    send_message(dealer, [], signed_message(Session(KEY), b"x" * (STREAM_MIN - 1)), None)
    frames = recv_frames(router)
    assert len(frames) == 1 + 1 + 5 + 1  # routing id, delimiter, sig + JSON, the buffer
    assert streams.feed(frames) is frames and bad == []


def test_the_sender_signs_while_streaming_and_the_receiver_vouches_for_what_it_checked(wire):
    """An unsigned message is signed part by part as it goes; the receiving Session then
    verifies it without a second MAC over its buffers, but only for the very buffer objects
    the stream's check covered."""
    router, (dealer, _), streams, bad = wire
    sender = Session(KEY)
    _, frames = sender.pack("push_request", {}, buffers=[b"\x05" * (STREAM_MIN + 1), b"tail"],
                            sign=False)
    send_message(dealer, [], frames, sender)
    assert frames[1] == sender.sign(frames[2:])   # the same signature as signing up front
    (got,) = receive(router, streams, 1)
    receiver = streams._session
    assert list(receiver._vouched) == [got[2].bytes]
    assert bytes(receiver.unpack(got).buffers[0]) == b"\x05" * (STREAM_MIN + 1)
    assert not receiver._vouched                  # used once
    receiver.vouch(got[2].bytes, [bytearray(b"other objects"), b"tail"])
    forged = [*got[:7], bytearray(b"\x06" * (STREAM_MIN + 1)), got[8]]
    with pytest.raises(Exception, match="signature did not verify"):
        receiver.unpack(forged, check_replay=False)
    assert bad == []


def test_streams_of_two_senders_interleave_and_stay_apart(wire):
    router, dealers, streams, bad = wire
    payloads = [bytes([i + 1]) * (3 * PART_SIZE + i) for i in range(2)]
    sessions = [Session(KEY) for _ in dealers]
    messages = [signed_message(s, b"p", p) for s, p in zip(sessions, payloads)]
    # the first sender is half-way through when the second sends its whole message
    head, parts, trailer = _stream_of(messages[0])
    send_frames(dealers[0], head)
    send_frames(dealers[0], [PART, parts[0]])
    send_message(dealers[1], [], messages[1], None)
    for part in parts[1:]:
        send_frames(dealers[0], [PART, part])
    send_frames(dealers[0], trailer)

    got = receive(router, streams, 2)
    by_size = sorted((bytes(Session(KEY).unpack(f).buffers[1]) for f in got), key=len)
    assert by_size == payloads and bad == []


def _stream_of(frames):
    """The head, parts and trailer ``send_message`` makes of signed ``frames`` whose last
    buffer streams."""
    data = bytes(frames[-1])
    head = [STREAM, struct.pack(">QQ", len(frames) - 2, len(data)), *frames[2:-1]]
    return head, [data[i:i + PART_SIZE] for i in range(0, len(data), PART_SIZE)], \
        [DELIM, frames[1]]


def _layout(*pairs):
    return b"".join(struct.pack(">QQ", p, s) for p, s in pairs)


JSON = [b"{}"] * 4  # a head's header, parent, metadata and content


@pytest.mark.parametrize("frames, reported", [
    ([PART, b"lost"], "dropped a part of no stream"),
    ([PART, b"lost", b"more"], "dropped a malformed stream message"),
    ([STREAM, b"", *JSON], "dropped a stream with a bad layout"),
    ([STREAM, b"\x00" * 17, *JSON], "dropped a stream with a bad layout"),
    ([STREAM, _layout((5, 10)), b"{}"], "dropped a stream with a bad layout"),   # no JSON
    ([STREAM, _layout((4, 10)), *JSON], "dropped a stream with a bad layout"),   # over content
    ([STREAM, _layout((6, 10)), *JSON], "dropped a stream with a bad layout"),   # past the end
    ([STREAM, _layout((5, 0)), *JSON], "dropped a stream with a bad layout"),    # empty
    ([STREAM, _layout((6, 10), (5, 10)), *JSON], "dropped a stream with a bad layout"),
    ([STREAM, _layout((5, 1 << 41)), *JSON], "dropped a stream with a bad layout"),  # absurd
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
    head = [STREAM, _layout((5, 10)), *JSON]
    # a part bigger than the layout said
    send_frames(dealer, head)
    send_frames(dealer, [PART, b"x" * 11])
    # the signature before the buffers are complete: dropped, not handed on short
    send_frames(dealer, head)
    send_frames(dealer, [PART, b"x" * 4])
    send_frames(dealer, [DELIM, b"sig"])
    # a new stream while one is unfinished: the old one goes
    send_frames(dealer, head)
    send_frames(dealer, [STREAM, _layout((5, 4)), *JSON])
    # and a whole message in the middle of a stream ends it, and is served
    send_frames(dealer, [PART, b"half"[:2]])
    send_frames(dealer, good)
    (got,) = receive(router, streams, 1)
    assert bytes(Session(KEY).unpack(got).buffers[0]) == b"fine"
    assert bad == ["dropped a stream", "dropped a message", "dropped an unfinished stream",
                   "dropped an unfinished stream"]


def test_a_streamed_buffer_that_was_changed_fails_verification(wire):
    router, (dealer, _), streams, bad = wire
    frames = signed_message(Session(KEY), b"p", b"\x01" * (2 * PART_SIZE))
    head, parts, trailer = _stream_of(frames)
    send_frames(dealer, head)
    send_frames(dealer, [PART, parts[0]])
    send_frames(dealer, [PART, b"\x02" + parts[1][1:]])
    send_frames(dealer, trailer)
    send_frames(dealer, signed_message(Session(KEY), b"next"))
    (got,) = receive(router, streams, 1)
    assert bytes(Session(KEY).unpack(got).buffers[0]) == b"next"
    assert bad == ["dropped a streamed message"]


def test_a_buffer_that_cannot_be_allocated_drops_its_stream(wire, monkeypatch):
    """No memory for what a head or a later buffer announces: the stream is dropped and
    reported, and the reader goes on."""
    router, (dealer, _), streams, bad = wire

    def no_memory(size):
        raise OSError(12, "Cannot allocate memory")
    monkeypatch.setattr(recvpool, "_new", no_memory)
    monkeypatch.setattr(stream_module, "POOL", recvpool.ReceivePool())  # none free to reuse
    send_frames(dealer, [STREAM, _layout((5, 10)), *JSON])
    good = signed_message(Session(KEY), b"fine")
    send_frames(dealer, good)
    (got,) = receive(router, streams, 1)
    assert bytes(Session(KEY).unpack(got).buffers[0]) == b"fine"
    assert bad == ["dropped a stream with a bad layout"]


def test_a_session_remembers_a_bounded_number_of_vouched_streams():
    session = Session(KEY)
    for i in range(MAX_VOUCHED + 1):
        session.vouch(b"%d" % i, [])
    assert len(session._vouched) == MAX_VOUCHED and b"0" not in session._vouched


def test_the_receive_pool_reuses_a_buffer_only_once_nothing_holds_it():
    pool = recvpool.ReceivePool(max_free=3 * 4096, idle=60)
    first = pool.take(4096)
    first_id = id(first)  # (a name for it would be a holder too)
    view = memoryview(first)
    array = np.frombuffer(first, dtype=np.uint8)
    del first
    second = pool.take(4096)
    assert id(second) != first_id, "a buffer in use is never handed out again"
    second[:4] = b"warm"
    del second
    third = pool.take(4096)
    assert third[:4] == b"warm", "a free buffer of that size is reused, as it is"
    del view
    assert id(pool.take(4096)) != first_id, "the numpy array still holds it"
    del array
    assert id(pool.take(4096)) == first_id
    assert id(pool.take(8192)) != first_id and pool.held()[0] == 4


def test_the_receive_pool_lets_go_of_idle_and_surplus_free_buffers():
    pool = recvpool.ReceivePool(max_free=2 * 4096, idle=0.2)
    kept = pool.take(4096)
    for _ in range(3):
        pool.take(4096)  # each is free again at once: handed out and dropped
    assert pool.held() == (2, 8192), "beyond max_free, free buffers go"
    time.sleep(0.3)
    pool.trim()
    assert pool.held() == (1, 4096), "idle ones go; the one in use stays"
    assert pool.take(4096) is not kept
