"""The signature rule of docs/protocol.md: one pass for small messages, chunk digests for large.

The expected signatures are recomputed here from hmac/hashlib and the documented rule, so a
change of the rule on one side only (sender or receiver) cannot pass unnoticed.
"""

import hashlib
import hmac
import multiprocessing
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
import zmq

from hpclaunch.error import SignatureError
from hpclaunch.protocol import (
    DELIM,
    Session,
    json_frame,
    new_key,
    recv_frames,
    send_frames,
    split_idents,
)
from hpclaunch.protocol.chunks import CHUNK, CHUNKED_MIN, buffer_digests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = new_key()
JSON = [json_frame({"msg_id": "m1", "msg_type": "push_request", "session": "s"}),
        json_frame({}), json_frame({"engine": 0}), json_frame({})]


def one_pass(frames):
    head = hmac.new(KEY, b"".join(frames[:4]), hashlib.sha256).hexdigest()
    if len(frames) == 4:
        return head.encode()
    lengths_and_bytes = b"".join(struct.pack(">Q", len(bytes(f))) + bytes(f) for f in frames[4:])
    whole = hmac.new(KEY, b"".join(frames[:4]) + lengths_and_bytes, hashlib.sha256)
    return (head + whole.hexdigest()).encode()


def chunked(frames):
    head = hmac.new(KEY, b"".join(frames[:4]), hashlib.sha256).hexdigest()
    chunked_key = hmac.new(KEY, b"hpclaunch chunked buffers v1", hashlib.sha256).digest()
    mac = hmac.new(chunked_key, b"".join(frames[:4]), hashlib.sha256)
    for buf in frames[4:]:
        data = bytes(buf)
        mac.update(struct.pack(">Q", len(data)))
        for i in range(0, len(data), CHUNK):
            mac.update(hashlib.sha256(data[i:i + CHUNK]).digest())
    return (head + mac.hexdigest()).encode()


def pattern(n, seed):
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


@pytest.mark.parametrize("sizes, rule", [
    ((), one_pass),
    ((200,), one_pass),
    ((200, CHUNKED_MIN - 201), one_pass),          # one byte short of the threshold, together
    ((200, CHUNKED_MIN - 200), chunked),           # exactly at it
    ((CHUNKED_MIN + 1,), chunked),                 # a one-byte last chunk
    ((3 * CHUNK, 0, 5), chunked),                  # whole chunks, an empty buffer, a tiny one
])
def test_signature_follows_the_documented_rule_on_both_sides_of_the_threshold(sizes, rule):
    frames = JSON + [pattern(n, i) for i, n in enumerate(sizes)]
    session = Session(KEY)
    signature = session.sign(frames)
    assert signature == rule(frames)
    assert Session(KEY).verify([signature, *frames]) == signature
    assert len(signature) == (64 if not sizes else 128)


def test_a_memoryview_of_floats_signs_as_its_bytes():
    array = np.arange(CHUNKED_MIN // 8 + 3, dtype=np.float64)
    as_view, as_bytes = JSON + [memoryview(array)], JSON + [array.tobytes()]
    assert Session(KEY).sign(as_view) == Session(KEY).sign(as_bytes) == chunked(as_bytes)


def big_message():
    buffers = [pattern(200, 1), pattern(CHUNK + 1000, 2), pattern(2 * CHUNK + 17, 3), pattern(CHUNK, 4)]
    frames = JSON + buffers
    return Session(KEY).sign(frames), frames


def refused(signature, frames):
    with pytest.raises(SignatureError):
        Session(KEY).verify([signature, *frames])
    return True


@pytest.mark.parametrize("buffer, offset", [(1, 0), (1, CHUNK - 1), (1, CHUNK), (2, 2 * CHUNK + 16),
                                            (3, CHUNK // 2), (0, 199)])
def test_changing_any_byte_of_a_large_message_fails(buffer, offset):
    signature, frames = big_message()
    tampered = bytearray(frames[4 + buffer])
    tampered[offset] ^= 0x01
    frames[4 + buffer] = bytes(tampered)
    assert refused(signature, frames)


def small_message():
    frames = JSON + [pattern(100, 1), pattern(300, 2), pattern(50, 3)]
    return Session(KEY).sign(frames), frames


@pytest.mark.parametrize("message", [big_message, small_message])
def test_moving_a_byte_between_buffers_fails(message):
    signature, frames = message()
    a, b = frames[5], frames[6]
    moved = frames[:5] + [a[:-1], a[-1:] + b] + frames[7:]
    assert b"".join(moved[4:]) == b"".join(frames[4:])  # the same bytes, other boundaries
    assert refused(signature, moved)


@pytest.mark.parametrize("message", [big_message, small_message])
def test_reordering_or_dropping_buffers_fails(message):
    signature, frames = message()
    assert refused(signature, frames[:5] + [frames[6], frames[5]] + frames[7:])
    assert refused(signature, frames[:-1])
    assert refused(signature, frames[:5] + frames[6:])
    assert refused(signature, frames + [b""])


def test_a_large_message_signature_does_not_sign_a_small_message_made_of_its_digests():
    """A small message whose one buffer is the large one's digest list would hash the same
    bytes in the one-pass form; the chunked form's own key keeps the two MACs apart."""
    signature, frames = big_message()
    forged = frames[:4] + [buffer_digests(frames[4:])]
    assert len(forged[4]) < CHUNKED_MIN
    assert refused(signature, forged)


def test_the_controller_check_covers_the_json_frames_of_a_large_message():
    signature, frames = big_message()
    tampered = frames[:4] + [b"x" + frames[4][1:]] + frames[5:]
    assert Session(KEY).verify([signature, *tampered], buffers=False) == signature[:64]
    assert refused(signature, tampered)
    other = [json_frame({"msg_id": "m2", "msg_type": "push_request", "session": "s"})] + frames[1:]
    with pytest.raises(SignatureError):
        Session(KEY).verify([signature, *other], buffers=False)


def test_a_large_message_verifies_from_received_frames():
    """Receivers hash zmq.Frames (zero-copy), senders memoryviews: both forms agree."""
    ctx = zmq.Context()
    router, dealer = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    try:
        port = router.bind_to_random_port("tcp://127.0.0.1")
        dealer.connect(f"tcp://127.0.0.1:{port}")
        array = np.random.default_rng(5).random(CHUNKED_MIN // 8 * 3)
        sender, receiver = Session(KEY), Session(KEY)
        header = sender.send(dealer, "push_request", buffers=[b"pickle", memoryview(array)])
        msg = receiver.unpack(recv_frames(router))
        assert msg.header == header
        assert np.frombuffer(msg.buffers[1], dtype=np.float64).tolist() == array.tolist()
        _idents, signed = split_idents(resent_with_a_changed_byte(dealer, router, msg))
        assert refused(signed[0].bytes, signed[1:])
    finally:
        dealer.close(linger=0)
        router.close(linger=0)
        ctx.term()


def resent_with_a_changed_byte(dealer, router, msg):
    """Send ``msg``'s frames again with one byte of the array changed; the frames received."""
    body = [bytes(f) for f in msg.frames[1:]]
    changed = bytearray(body[-1])
    changed[len(changed) // 2] ^= 0xFF
    send_frames(dealer, [DELIM, msg.frames[0].bytes, *body[:-1], bytes(changed)])
    return recv_frames(router)


def test_no_hashing_thread_until_a_large_message_is_signed():
    code = ("import threading; from hpclaunch.protocol import Session, json_frame\n"
            "s = Session(b'k'); f = [json_frame({})] * 4\n"
            "s.sign(f + [b'x' * 1000000]); print(threading.active_count())\n"
            "s.sign(f + [b'x' * 20000000]); print(threading.active_count())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT).stdout.split()
    assert out == ["1", "3"]


def _sign_in_child(queue):
    queue.put(Session(KEY).sign(JSON + [pattern(2 * CHUNKED_MIN, 9)]))


def test_a_forked_child_signs_large_messages_with_its_own_threads():
    expected = Session(KEY).sign(JSON + [pattern(2 * CHUNKED_MIN, 9)])  # the parent's pool exists
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_sign_in_child, args=(queue,))
    child.start()
    try:
        assert queue.get(timeout=30) == expected
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0
