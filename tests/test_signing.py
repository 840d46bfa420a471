"""The signature rule of docs/protocol.md: one HMAC pass for small messages, Poly1305 for large.

The expected signatures are recomputed here from hmac/hashlib and the documented rule, so a
change of the rule on one side only (sender or receiver) cannot pass unnoticed.
"""

import hashlib
import hmac
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
import zmq
from cryptography.hazmat.primitives.poly1305 import Poly1305

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
from hpclaunch.protocol.bulk import BULK_MIN

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


def bulk_tag(frames):
    """Poly1305 of the buffers (each with its 8-byte length) under the one-time key."""
    one_time_key_key = hmac.new(KEY, b"hpclaunch one-time buffer keys v1", hashlib.sha256).digest()
    one_time_key = hmac.new(one_time_key_key, b"".join(frames[:4]), hashlib.sha256).digest()
    return Poly1305.generate_tag(one_time_key, b"".join(
        struct.pack(">Q", len(bytes(f))) + bytes(f) for f in frames[4:]))


def bulk(frames):
    head = hmac.new(KEY, b"".join(frames[:4]), hashlib.sha256).hexdigest()
    mac_key = hmac.new(KEY, b"hpclaunch bulk buffers v1", hashlib.sha256).digest()
    mac = hmac.new(mac_key, b"".join(frames[:4]) + bulk_tag(frames), hashlib.sha256)
    return (head + mac.hexdigest()).encode()


def pattern(n, seed):
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


@pytest.mark.parametrize("sizes, rule", [
    ((), one_pass),
    ((200,), one_pass),
    ((200, BULK_MIN - 201), one_pass),          # one byte short of the threshold, together
    ((200, BULK_MIN - 200), bulk),              # exactly at it
    ((BULK_MIN + 1,), bulk),
    ((3 * BULK_MIN, 0, 5), bulk),               # an empty buffer, a tiny one
])
def test_signature_follows_the_documented_rule_on_both_sides_of_the_threshold(sizes, rule):
    frames = JSON + [pattern(n, i) for i, n in enumerate(sizes)]
    session = Session(KEY)
    signature = session.sign(frames)
    assert signature == rule(frames)
    assert Session(KEY).verify([signature, *frames]) == signature
    assert len(signature) == (64 if not sizes else 128)


def test_a_memoryview_of_floats_signs_as_its_bytes():
    array = np.arange(BULK_MIN // 8 + 3, dtype=np.float64)
    as_view, as_bytes = JSON + [memoryview(array)], JSON + [array.tobytes()]
    assert Session(KEY).sign(as_view) == Session(KEY).sign(as_bytes) == bulk(as_bytes)


def big_message():
    buffers = [pattern(200, 1), pattern(BULK_MIN + 1000, 2), pattern(2 * BULK_MIN + 17, 3),
               pattern(BULK_MIN, 4)]
    frames = JSON + buffers
    return Session(KEY).sign(frames), frames


def refused(signature, frames):
    with pytest.raises(SignatureError):
        Session(KEY).verify([signature, *frames])
    return True


@pytest.mark.parametrize("buffer, offset", [(1, 0), (1, BULK_MIN - 1), (1, BULK_MIN),
                                            (2, 2 * BULK_MIN + 16), (3, BULK_MIN // 2), (0, 199)])
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


def test_a_large_message_signature_does_not_sign_a_small_message_made_of_its_tag():
    """A small message whose one buffer is the large one's Poly1305 tag would MAC nearly the
    same bytes in the one-pass form; the large form's own key keeps the two MACs apart."""
    signature, frames = big_message()
    forged = frames[:4] + [bulk_tag(frames)]
    assert signature == bulk(frames) and len(forged[4]) < BULK_MIN
    assert refused(signature, forged)


def test_the_same_buffers_under_another_header_get_another_tag():
    """The one-time key comes from the JSON frames: two messages never share it."""
    _, frames = big_message()
    other = [json_frame({"msg_id": "m2", "msg_type": "push_request", "session": "s"})] + frames[1:]
    assert bulk_tag(frames) != bulk_tag(other)


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
        array = np.random.default_rng(5).random(BULK_MIN // 8 * 3)
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


def test_cryptography_is_imported_only_for_a_large_message():
    """It costs an idle engine ~7 MB of its ~27."""
    code = ("import sys; from hpclaunch.protocol import Session, json_frame\n"
            "s = Session(b'k'); f = [json_frame({})] * 4\n"
            f"s.sign(f + [b'x' * {BULK_MIN - 1}]); print('cryptography' in sys.modules)\n"
            f"s.sign(f + [b'x' * {BULK_MIN}]); print('cryptography' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT).stdout.split()
    assert out == ["False", "True"]
