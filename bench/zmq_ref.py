#!/usr/bin/env python3
"""Raw pyzmq reference (the physical limit of the transport here); prints ONE JSON line.

A ROUTER echo server in a forked process bound to tcp://127.0.0.1:<random port>; the client
is a DEALER in this process. Every message is [op (1 byte), payload]; the server answers
    b"e" echo: [b"e", payload]        b"p" push: [b"a"] once the payload has arrived
    b"g" get:  [b"d", stored payload] b"q" quit
Large buffers are sent and received with copy=False, as a zero-copy task system would.
The bandwidth is measured twice: as Python starts by default, and (in a child started with
GLIBC_TUNABLES=glibc.malloc.hugetlb=1, as hpclaunch starts its controller and engines) with
malloc on transparent huge pages, where receiving into fresh memory faults far less.

    python zmq_ref.py [--run 1] [--quick] [--lat-iters 10000] [--bw-bytes 100000000] ...
"""

import argparse
import json
import multiprocessing as mp
import os
import platform
import socket
import statistics
import subprocess
import sys
import time

import numpy as np
import zmq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchkit import procs  # noqa: E402

QUICK = {"lat_iters": 2000, "lat_warmup": 200, "tput_msgs": 20000, "bw_bytes": 20_000_000,
         "bw_reps": 3}


def _socket(ctx, kind):
    s = ctx.socket(kind)
    s.setsockopt(zmq.SNDHWM, 0)
    s.setsockopt(zmq.RCVHWM, 0)
    s.setsockopt(zmq.LINGER, 0)
    return s


def serve(port_queue):
    ctx = zmq.Context()
    s = _socket(ctx, zmq.ROUTER)
    port_queue.put(s.bind_to_random_port("tcp://127.0.0.1"))
    stored = None
    while True:
        ident, op, payload = s.recv_multipart(copy=False)
        o = op.bytes
        if o == b"e":
            s.send_multipart([ident, op, payload], copy=False)
        elif o == b"p":
            stored = payload  # keep the zmq.Frame: no copy
            s.send_multipart([ident, b"a", b""])
        elif o == b"g":
            s.send_multipart([ident, b"d", stored], copy=False)
        elif o == b"q":
            s.send_multipart([ident, b"q", b""])
            break
    s.close()
    ctx.term()


def measure_latency(d, a):
    small = os.urandom(a.msg_bytes)
    for _ in range(a.lat_warmup):
        d.send_multipart([b"e", small])
        d.recv_multipart()
    lat = []
    for _ in range(a.lat_iters):
        t0 = time.perf_counter()
        d.send_multipart([b"e", small])
        d.recv_multipart()
        lat.append((time.perf_counter() - t0) * 1e6)
    return {"iters": a.lat_iters, "msg_bytes": a.msg_bytes,
            "median_us": statistics.median(lat), "p99_us": float(np.percentile(lat, 99)),
            "p90_us": float(np.percentile(lat, 90)), "mean_us": statistics.fmean(lat),
            "min_us": min(lat)}


def measure_throughput(d, a):
    """Echo round trips with up to `window` small messages in flight."""
    small = os.urandom(a.msg_bytes)
    n, w = a.tput_msgs, a.window
    t0 = time.perf_counter()
    sent = recvd = 0
    while sent < min(w, n):
        d.send_multipart([b"e", small])
        sent += 1
    while recvd < n:
        d.recv_multipart()
        recvd += 1
        if sent < n:
            d.send_multipart([b"e", small])
            sent += 1
    dt = time.perf_counter() - t0
    return {"msgs": n, "window": w, "msg_bytes": a.msg_bytes, "msgs_per_s": n / dt,
            "elapsed_s": dt}


def measure_bandwidth(d, arr, reps):
    mb = arr.nbytes / 1e6
    push_t, pull_t, echo_t = [], [], []
    for i in range(reps + 1):  # the first repetition is the warm-up
        t0 = time.perf_counter()
        d.send_multipart([b"p", arr], copy=False)
        d.recv_multipart()
        t1 = time.perf_counter()
        d.send_multipart([b"g", b""])
        _, back = d.recv_multipart(copy=False)
        t2 = time.perf_counter()
        d.send_multipart([b"e", arr], copy=False)
        _, back2 = d.recv_multipart(copy=False)
        t3 = time.perf_counter()
        if len(back.buffer) != arr.nbytes:
            raise AssertionError(f"pulled {len(back.buffer)} bytes, pushed {arr.nbytes}")
        if i == 0:
            if not np.array_equal(np.frombuffer(back.buffer, dtype=arr.dtype), arr):
                raise AssertionError("the pulled buffer differs from the pushed one")
            continue
        push_t.append(t1 - t0)
        pull_t.append(t2 - t1)
        echo_t.append(t3 - t2)
        del back, back2
    return {"bytes": int(arr.nbytes), "reps": reps,
            "push_MBps": mb / statistics.median(push_t),
            "pull_MBps": mb / statistics.median(pull_t),
            "echo_MBps_each_way": 2 * mb / statistics.median(echo_t),
            "push_s": push_t, "pull_s": pull_t, "echo_s": echo_t}


def measure_memcpy(arr, reps):
    """np.copyto of the same buffer on one core: the ceiling for any copy."""
    dst = np.empty_like(arr)
    times = []
    for _ in range(reps + 1):
        t0 = time.perf_counter()
        np.copyto(dst, arr)
        times.append(time.perf_counter() - t0)
    return {"MBps": arr.nbytes / 1e6 / statistics.median(times[1:])}


def measure_bandwidth_on_huge_pages(a):
    """The bandwidth again in a fresh interpreter whose malloc uses huge pages (glibc reads
    its tunables only at start-up)."""
    env = dict(os.environ, GLIBC_TUNABLES="glibc.malloc.hugetlb=1")
    argv = [sys.executable, os.path.abspath(__file__), "--bandwidth-only", "--run", str(a.run),
            "--bw-bytes", str(a.bw_bytes), "--bw-reps", str(a.bw_reps)]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"the huge-pages child printed no record: {out.stderr[-500:]}")
    child = json.loads(lines[-1])
    if child["errors"]:
        raise RuntimeError(f"the huge-pages child failed: {child['errors']}")
    return child["metrics"]["bandwidth"]


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="small settings to check the harness")
    ap.add_argument("--lat-iters", type=int, default=10000)
    ap.add_argument("--lat-warmup", type=int, default=1000)
    ap.add_argument("--msg-bytes", type=int, default=16)
    ap.add_argument("--tput-msgs", type=int, default=200000)
    ap.add_argument("--window", type=int, default=1000)
    ap.add_argument("--bw-bytes", type=int, default=100_000_000)
    ap.add_argument("--bw-reps", type=int, default=5)
    ap.add_argument("--bandwidth-only", action="store_true",
                    help="measure only the bandwidth (the huge-pages child)")
    a = ap.parse_args()
    if a.quick:
        for k, v in QUICK.items():
            setattr(a, k, v)
    return a


def main():
    a = parse_args()
    rec = {"peer": "zmq", "n": 1, "run": a.run,
           "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "host": socket.gethostname(), "cpus": os.cpu_count(),
           "python": platform.python_version(), "executable": sys.executable,
           "info": {"package": "pyzmq", "version": zmq.__version__,
                    "libzmq": zmq.zmq_version(), "transport": "tcp://127.0.0.1"},
           "params": vars(a), "loadavg_before": procs.loadavg(),
           "metrics": {}, "errors": {}, "skipped": {}}
    t_all = time.perf_counter()
    ctx = mp.get_context("fork")
    port_queue = ctx.Queue()
    server = ctx.Process(target=serve, args=(port_queue,), daemon=True)
    server.start()
    try:
        port = port_queue.get(timeout=30)
        zc = zmq.Context()
        d = _socket(zc, zmq.DEALER)
        d.connect(f"tcp://127.0.0.1:{port}")
        if not a.bandwidth_only:
            rec["metrics"]["latency"] = measure_latency(d, a)
            rec["metrics"]["throughput"] = measure_throughput(d, a)
        arr = np.random.default_rng(1).random(a.bw_bytes // 8)
        rec["metrics"]["bandwidth"] = measure_bandwidth(d, arr, a.bw_reps)
        if not a.bandwidth_only:
            rec["metrics"]["memcpy"] = measure_memcpy(arr, a.bw_reps)
            rec["metrics"]["bandwidth_huge_pages"] = measure_bandwidth_on_huge_pages(a)
        d.send_multipart([b"q", b""])
        d.recv_multipart()
        d.close()
        zc.term()
    except BaseException as e:  # noqa: B036 - the record must be printed whatever happened
        rec["errors"]["fatal"] = f"{type(e).__name__}: {e}"
    finally:
        server.join(timeout=10)
        if server.is_alive():
            server.terminate()
            server.join(timeout=5)
        rec["wall_s"] = time.perf_counter() - t_all
        rec["loadavg_after"] = procs.loadavg()
        rec["partial"] = False
        print(json.dumps(rec), flush=True)
    return 1 if rec["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
