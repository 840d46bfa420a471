"""The workloads: one peer-agnostic definition each (the contract described in README.md).

Each takes an adapter (adapters/base.py) and a params dict and returns a JSON-able dict.
Times are wall clock ``time.perf_counter()`` in the client process; CPU figures split the
client (this process) from the sum of its live descendants (controller/scheduler, workers).
Warm-up work is never timed.
"""

import statistics
import time

import numpy as np

from .adapters.base import Unsupported
from .procs import cpu_breakdown, cpu_by_process, cpu_snapshot, now, rss_mb

#: The order a run executes them in; "start" always runs first.
ALL = ("start", "idle", "throughput", "map", "automap", "latency", "bandwidth")

DEFAULTS = {
    "idle_s": 5,
    "throughput_tasks": 5000,
    "throughput_warmup": 100,
    "map_tasks": 20000,
    "map_warmup": 100,
    "automap_items": 100000,
    "latency_iters": 1000,
    "latency_warmup": 50,
    "bw_bytes": 100_000_000,  # MB = 1e6 bytes
    "bw_reps": 5,
    "bw_warmup": 1,
}

#: Small settings for checking the harness itself (QUICK=1); not for comparing peers.
QUICK = {
    "idle_s": 2,
    "throughput_tasks": 500,
    "throughput_warmup": 20,
    "map_tasks": 1000,
    "map_warmup": 20,
    "automap_items": 10000,
    "latency_iters": 200,
    "latency_warmup": 20,
    "bw_bytes": 20_000_000,
    "bw_reps": 3,
    "bw_warmup": 1,
}


def _pct(samples, q):
    return float(np.percentile(np.asarray(samples), q))


def w_start(ad, p):
    c0 = cpu_snapshot()
    t0 = now()
    ad.start()
    t1 = now()
    c1 = cpu_snapshot()
    return {"start_s": t1 - t0, "n_workers": ad.n, "client_cpu_s": c1[0] - c0[0]}


def w_idle(ad, p):
    """CPU burnt by a started, idle cluster (heartbeats, polling), then each worker's RSS."""
    c0 = cpu_snapshot()
    t0 = now()
    time.sleep(p["idle_s"])
    dt = now() - t0
    c1 = cpu_snapshot()
    out = {"seconds": dt,
           "client_cpu_pct": 100 * (c1[0] - c0[0]) / dt,
           "workers_cpu_pct": 100 * (c1[1] - c0[1]) / dt}
    try:
        rss = rss_mb(ad.worker_pids())
    except Unsupported as e:
        out["worker_rss_skipped"] = str(e)
        return out
    out["worker_rss_MB"] = [round(x, 1) for x in rss]
    if rss:
        out["worker_rss_MB_median"] = statistics.median(rss)
    return out


def w_throughput(ad, p):
    n = p["throughput_tasks"]
    ad.wait_all([ad.submit_noop() for _ in range(p["throughput_warmup"])])
    b0 = cpu_by_process()
    c0 = cpu_snapshot()
    t0 = now()
    handles = [ad.submit_noop() for _ in range(n)]
    t1 = now()
    ad.wait_all(handles)
    t2 = now()
    c1 = cpu_snapshot()
    b1 = cpu_by_process()
    ad.fetch_results(handles)
    t3 = now()
    return {
        "tasks": n,
        "tasks_per_s": n / (t2 - t0),
        "elapsed_s": t2 - t0,
        "submit_per_s": n / (t1 - t0),
        "tasks_per_s_with_results": n / (t3 - t0),
        "client_cpu_s": c1[0] - c0[0],
        "workers_cpu_s": c1[1] - c0[1],
        "cpu_by_role": cpu_breakdown(b0, b1),
    }


def _timed_map(run, count):
    c0 = cpu_snapshot()
    t0 = now()
    result = run(count)
    t1 = now()
    c1 = cpu_snapshot()
    if len(result) != count:
        raise AssertionError(f"map returned {len(result)} results for {count} items")
    return {"items": count, "tasks_per_s": count / (t1 - t0), "elapsed_s": t1 - t0,
            "client_cpu_s": c1[0] - c0[0], "workers_cpu_s": c1[1] - c0[1]}


def w_map(ad, p):
    """One task per item (chunksize=1): the per-task overhead of a map."""
    ad.map_noop(p["map_warmup"])
    return _timed_map(ad.map_noop, p["map_tasks"])


def w_automap(ad, p):
    """Many trivial items and no chunk size given: what the obvious one-liner costs."""
    ad.automap_noop(p["map_warmup"])
    out = _timed_map(ad.automap_noop, p["automap_items"])
    out["how"] = ad.automap_how
    return out


def w_latency(ad, p):
    for _ in range(p["latency_warmup"]):
        ad.roundtrip_noop()
    samples = []
    for _ in range(p["latency_iters"]):
        t0 = now()
        ad.roundtrip_noop()
        samples.append((now() - t0) * 1e6)
    return {
        "iters": len(samples),
        "median_us": statistics.median(samples),
        "p99_us": _pct(samples, 99),
        "p90_us": _pct(samples, 90),
        "mean_us": statistics.fmean(samples),
        "min_us": min(samples),
        "max_us": max(samples),
    }


def w_bandwidth(ad, p):
    # random float64 is incompressible, so no transport can cheat by compressing
    arr = np.random.default_rng(12345).random(p["bw_bytes"] // 8)
    mb = arr.nbytes / 1e6
    out = {"bytes": int(arr.nbytes), "reps": p["bw_reps"], "modes": {}}
    for mode in ad.bandwidth_modes:
        for _ in range(p["bw_warmup"]):
            ad.push(arr, mode)
            back = ad.pull(mode)
            if not (isinstance(back, np.ndarray) and back.shape == arr.shape
                    and np.array_equal(back, arr)):
                raise AssertionError(f"bandwidth[{mode}]: the pulled array differs from the pushed one")
            del back
        push_t, pull_t = [], []
        for _ in range(p["bw_reps"]):
            t0 = now()
            ad.push(arr, mode)
            t1 = now()
            back = ad.pull(mode)
            t2 = now()
            if back.nbytes != arr.nbytes:
                raise AssertionError(f"bandwidth[{mode}]: pulled {back.nbytes} bytes, pushed {arr.nbytes}")
            del back
            push_t.append(t1 - t0)
            pull_t.append(t2 - t1)
        out["modes"][mode] = {"push_MBps": mb / statistics.median(push_t),
                              "pull_MBps": mb / statistics.median(pull_t),
                              "push_s": push_t, "pull_s": pull_t}
    first = out["modes"][ad.bandwidth_modes[0]]
    out["push_MBps"] = first["push_MBps"]
    out["pull_MBps"] = first["pull_MBps"]
    return out


FUNCS = {
    "start": w_start,
    "idle": w_idle,
    "throughput": w_throughput,
    "map": w_map,
    "automap": w_automap,
    "latency": w_latency,
    "bandwidth": w_bandwidth,
}
