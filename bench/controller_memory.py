"""Controller memory across a long run: is it flat with the default bounded task DB?

Starts a local cluster, then pushes TASKS no-op load-balanced tasks through it in
batches, sampling the controller's RSS after each batch. Prints one line per
sample and a summary (first sample after warm-up, last, max, drift in %), and
the DB's record count, so a leak and a bound that holds are told apart.

    .venv/bin/python bench/controller_memory.py [--tasks 200000] [--engines 2] [--batch 20000]
"""

import argparse
import json
import time

import psutil

import hpclaunch as hl


def noop(x):
    return None


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=200_000)
    p.add_argument("--engines", type=int, default=2)
    p.add_argument("--batch", type=int, default=20_000)
    p.add_argument("--max-records", type=int, default=None,
                   help="controller --max-records (default: the controller's own default)")
    args = p.parse_args()
    controller_args = ["--max-records", str(args.max_records)] if args.max_records else []
    with hl.Cluster(n=args.engines, log_level=40, controller_args=controller_args) as rc:
        with open(rc.connection_file) as f:
            controller = psutil.Process(json.load(f)["controller_pid"])
        lview = rc.load_balanced_view()
        samples = []
        done = 0
        t0 = time.perf_counter()
        while done < args.tasks:
            n = min(args.batch, args.tasks - done)
            lview.map(noop, range(n), chunksize=1, block=True)
            done += n
            rc.purge_local_results("all")   # the client's own books are not what we measure
            rss = controller.memory_info().rss / 1e6
            samples.append(rss)
            print(f"{done:>8} tasks  controller RSS {rss:7.1f} MB  "
                  f"{done / (time.perf_counter() - t0):8.0f} tasks/s", flush=True)
        records = len(rc.hub_history())
    base = samples[1] if len(samples) > 2 else samples[0]   # after warm-up
    summary = {"tasks": args.tasks, "engines": args.engines, "rss_first_mb": round(base, 1),
               "rss_last_mb": round(samples[-1], 1), "rss_max_mb": round(max(samples), 1),
               "drift_pct": round(100 * (samples[-1] - base) / base, 1),
               "records_kept": records}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
