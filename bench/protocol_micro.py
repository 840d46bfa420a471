#!/usr/bin/env python3
"""Per-call CPU of the protocol and of the engine's no-op apply path, in microseconds.

Every message of a round trip crosses these functions on the client, the controller and the
engine; the figures say where the per-task CPU goes. Only public names are used, so the same
script measures an older tree too:

    python bench/protocol_micro.py                      # the hpclaunch on sys.path
    python bench/protocol_micro.py --compare /tmp/base  # /tmp/base (before) vs this tree (after),
                                                        # interleaved runs, same machine state

Each figure is the median of ``--repeat`` batches (the minimum over ``--rounds`` runs with
``--compare``); the machine is shared, so compare only figures of one invocation.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)  # benchkit.tasks.noop travels by reference, as in the latency workload


def per_call_us(fn, number, repeat):
    """Median over ``repeat`` batches of the mean time of one call, in microseconds."""
    fn()  # warm caches and lazy imports
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - start) / number * 1e6)
    return statistics.median(samples)


def distinct_messages(session, count, **kwargs):
    """``count`` packed messages, each with its own signature (a receiver rejects replays)."""
    return [[b"client-id", *session.pack("apply_request", **kwargs)[1]] for _ in range(count)]


def consume(items):
    """A callable that pops one prepared item per call (for functions that take it)."""
    it = iter(items)
    return lambda: next(it)


def measure(number, repeat):
    import zmq
    from benchkit.tasks import noop

    from hpclaunch.engine.capture import captured_output
    from hpclaunch.engine.kernel import Kernel
    from hpclaunch.engine.wire import reply_metadata
    from hpclaunch.protocol import Session, has_message, new_key, pack_apply, serialize

    key = new_key()
    client, engine_side, controller = Session(key), Session(key), Session(key)
    apply_buffers = pack_apply(noop)
    request_md = {"engine": 0}
    figures = {}

    def timed(name, fn, n=number):
        figures[name] = per_call_us(fn, n, repeat)

    timed("pack_apply(noop)", lambda: pack_apply(noop))
    # a script's function (defined in __main__, so pickled by value) that uses numpy
    script = {"__name__": "__main__", "np": __import__("numpy")}
    exec("def scaled_sum(x, k=2):\n    return float(np.sum(x)) * k\n", script)  # noqa: S102
    timed("pack_apply(script function)", lambda: pack_apply(script["scaled_sum"], (1,)))
    timed("Session.pack apply_request", lambda: client.pack(
        "apply_request", {}, metadata=request_md, buffers=apply_buffers))
    total = (number * repeat + 1)
    engine_in = consume(distinct_messages(client, total, content={}, metadata=request_md,
                                          buffers=apply_buffers))
    timed("Session.unpack (engine, full MAC)", lambda: engine_side.unpack(engine_in()))
    hub_in = consume(distinct_messages(client, total, content={}, metadata=request_md,
                                       buffers=apply_buffers))
    timed("Session.unpack (controller, JSON MAC)",
          lambda: controller.unpack(hub_in(), content=False, buffers=False))
    parent = client.header("apply_request")
    result = serialize(None)

    def pack_reply():
        md = reply_metadata(0, "ok", time.time(), time.time(), "", "")
        engine_side.pack("apply_reply", {"status": "ok"}, parent=parent, metadata=md, buffers=result)
    timed("reply_metadata + Session.pack apply_reply", pack_reply)
    kernel = Kernel()
    timed("Kernel.apply(noop)", lambda: kernel.apply(apply_buffers))

    def capture():
        with captured_output(lambda name, text: None):
            pass
    timed("captured_output enter+exit", capture)

    ctx = zmq.Context()
    quiet = ctx.socket(zmq.DEALER)
    quiet.bind("inproc://protocol-micro-quiet")
    timed("has_message (nothing waiting)", lambda: has_message(quiet))
    quiet.close(linger=0)

    figures["engine: one no-op apply (read, run, reply)"] = engine_task_us(
        ctx, key, client, apply_buffers, number, repeat)
    ctx.destroy(linger=0)
    figures.update(big_signing_ms())
    return figures


def engine_task_us(ctx, key, client, apply_buffers, number, repeat):
    """The real engine loop's work for one apply_request: read + verify, run noop under
    output capture, build and send the reply. Only the engine's calls are timed."""
    import zmq

    from hpclaunch.engine.engine import Engine

    router = ctx.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    engine = Engine(f"tcp://127.0.0.1:{port}", key, install_main=False)
    engine.id = 0
    ident = f"engine-{engine.uuid}".encode()
    poller = zmq.Poller()
    poller.register(engine.main, zmq.POLLIN)
    try:
        engine.main.send(b"hello")  # the ROUTER learns the engine's identity
        router.recv_multipart()
        samples = []
        for batch in range(repeat + 1):
            spent = 0.0
            for _ in range(number):
                _header, frames = client.pack("apply_request", {}, metadata={"engine": 0},
                                             buffers=apply_buffers)
                router.send_multipart([ident, *frames])
                poller.poll(5000)
                start = time.perf_counter()
                engine._read_all()
                engine._run(engine.queue.popleft())
                spent += time.perf_counter() - start
                router.recv_multipart()
            if batch:  # the first batch warms up
                samples.append(spent / number * 1e6)
        return statistics.median(samples)
    finally:
        engine.close(deliver=False)
        router.close(linger=0)


def big_signing_ms(size=100_000_000, repeat=3):
    """Sign (sender) and verify (receiver) of a message carrying one 100 MB buffer, ms."""
    from hpclaunch.protocol import Session, json_frame, new_key

    session = Session(new_key())
    body = [json_frame({"msg_id": "x", "msg_type": "push_request", "session": "s"}),
            json_frame({}), json_frame({}), json_frame({}), b"p" * 200, bytearray(os.urandom(1 << 20)) * 100]
    body[-1] = memoryview(body[-1])[:size]
    sign, verify = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        sig = session.sign(body)
        sign.append(time.perf_counter() - start)
        start = time.perf_counter()
        session.verify([sig, *body], check_replay=False)
        verify.append(time.perf_counter() - start)
    return {"sign 100 MB (ms)": min(sign) * 1e3, "verify 100 MB (ms)": min(verify) * 1e3}


def compare(base, rounds, number, repeat):
    """Run this script on ``base`` and on this tree, interleaved; print both and the ratio."""
    runs = {"before": [], "after": []}
    for _ in range(rounds):
        for label, tree in (("before", base), ("after", ROOT)):
            env = dict(os.environ, PYTHONPATH=tree)
            out = subprocess.run([sys.executable, __file__, "--json", "--number", str(number),
                                  "--repeat", str(repeat)], env=env, cwd="/",
                                 check=True, capture_output=True, text=True).stdout
            runs[label].append(json.loads(out))
    best = {label: {k: min(r[k] for r in rs) for k in rs[0]} for label, rs in runs.items()}
    width = max(len(k) for k in best["after"])
    print(f"{'':{width}}  {'before':>9}  {'after':>9}  after/before")
    for k, after in best["after"].items():
        before = best["before"].get(k)
        ratio = f"{after / before:10.2f}" if before else "         -"
        print(f"{k:{width}}  {before or float('nan'):9.1f}  {after:9.1f}  {ratio}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--compare", metavar="BASE_TREE", help="an older checkout to compare with")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved runs per tree (--compare)")
    ap.add_argument("--number", type=int, default=2000, help="calls per batch")
    ap.add_argument("--repeat", type=int, default=5, help="batches per figure")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    a = ap.parse_args()
    if a.compare:
        compare(a.compare, a.rounds, a.number, a.repeat)
        return
    figures = measure(a.number, a.repeat)
    if a.json:
        print(json.dumps(figures))
    else:
        for k, v in figures.items():
            print(f"{k:45} {v:9.1f}")


if __name__ == "__main__":
    main()
