"""transport.spin_poll: a thread that expects a message at once looks for it without
sleeping for a while, then sleeps as zmq_poll would."""

import os
import subprocess
import sys
import threading
import time

import pytest
import zmq

from hpclaunch.protocol import transport


@pytest.fixture
def pair():
    ctx = zmq.Context.instance()
    reading, writing = transport.wake_pair(ctx, f"spin-test-{time.monotonic_ns()}")
    yield reading, writing
    reading.close(linger=0)
    writing.close(linger=0)


def test_a_waiting_message_is_found_without_spinning(pair):
    reading, writing = pair
    writing.send(b"x")
    time.sleep(0.01)
    started = time.perf_counter()
    ready = transport.spin_poll([(reading, zmq.POLLIN)], 1000, started + 5.0)
    assert [s for s, _ in ready] == [reading]
    assert time.perf_counter() - started < 1.0


def test_a_message_sent_while_it_spins_is_found_before_the_spin_ends(pair):
    reading, writing = pair
    sender = threading.Timer(0.05, writing.send, (b"x",))
    started = time.perf_counter()
    sender.start()
    ready = transport.spin_poll([(reading, zmq.POLLIN)], 0, started + 5.0)
    sender.join()
    assert [s for s, _ in ready] == [reading]
    assert 0.04 < time.perf_counter() - started < 4.0


def test_after_the_spin_it_sleeps_for_the_timeout(pair):
    reading, _ = pair
    started = time.perf_counter()
    cpu = time.process_time()
    assert transport.spin_poll([(reading, zmq.POLLIN)], 300, started + 0.1) == []
    waited = time.perf_counter() - started
    assert 0.35 < waited < 3.0
    assert time.process_time() - cpu < waited - 0.2, "it slept after the spin"


@pytest.mark.parametrize("value, seconds", [("", 300e-6), ("0", 0.0), ("50", 50e-6),
                                            ("-3", 0.0), ("junk", 300e-6)])
def test_the_spin_is_set_by_hpclaunch_spin_us(value, seconds):
    env = {**os.environ, "HPCLAUNCH_SPIN_US": value}
    done = subprocess.run([sys.executable, "-c", "from hpclaunch.protocol import transport; "
                           "print(repr(transport.SPIN_SECONDS))"],
                          env=env, capture_output=True, text=True, check=True)
    assert float(done.stdout) == pytest.approx(seconds)
    assert ("not a number of microseconds" in done.stderr) == (value == "junk")
