#!/usr/bin/env python3
"""Run every peer x N x repetition, each as its own process under a hard timeout, append one
JSON line per run to results/<stamp>.jsonl, then print the table (report.py).

Repetitions are interleaved (run 1 of every peer, then run 2, ...) so a slow drift of the
shared machine hits every peer alike. A run killed on its timeout keeps the workloads it
finished (run_peer.py prints a partial record after each one). Called by run.sh, which
prepares the interpreters; stdlib only.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import report  # noqa: E402
from benchkit.adapters import ADAPTERS  # noqa: E402  (a registry: imports no peer)


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--peers", default="zmq hpclaunch ipp dask pool parsl")
    ap.add_argument("--ns", default="2 8")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--only", default="", help="comma list of workloads (default: all)")
    ap.add_argument("--timeout", type=int, default=300, help="hard limit per run (s)")
    ap.add_argument("--quick", action="store_true", help="small settings to check the harness")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=INT")
    ap.add_argument("--peers-python", required=True, help="interpreter of the peers venv")
    ap.add_argument("--hpclaunch-python", required=True, help="interpreter with hpclaunch")
    ap.add_argument("--workdir", default="/tmp/hpclaunch-bench/work",
                    help="cwd of every run, so peers that write into the cwd write there")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    return ap.parse_args()


def command(args, peer, n, run):
    python = args.hpclaunch_python if peer == "hpclaunch" else args.peers_python
    if peer == "zmq":
        cmd = [python, os.path.join(HERE, "zmq_ref.py"), "--run", str(run)]
        return cmd + (["--quick"] if args.quick else [])
    cmd = [python, os.path.join(HERE, "run_peer.py"), "--peer", peer, "-n", str(n),
           "--run", str(run), "--budget", str(max(30, args.timeout - 40))]
    if args.only:
        cmd += ["--only", args.only]
    if args.quick:
        cmd.append("--quick")
    for item in args.set:
        cmd += ["--set", item]
    return cmd


def _stop(proc):
    """SIGTERM lets run_peer.py stop its cluster and end its descendants by PID; whatever is
    left of the process group we created is then killed."""
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run_one(args, peer, n, run, log):
    """One run in its own session; returns its record (the last JSON line it printed)."""
    failed = {"peer": peer, "n": n, "run": run, "metrics": {}, "skipped": {}, "errors": {}}
    if not os.access(args.hpclaunch_python if peer == "hpclaunch" else args.peers_python, os.X_OK):
        failed["errors"]["fatal"] = ("no interpreter for hpclaunch: create the project's .venv "
                                     "or set PYTHON=/path/to/python" if peer == "hpclaunch"
                                     else "no peers venv: run bench/run.sh to create it")
        return failed
    t0 = time.monotonic()
    # stdout goes to a file, not a pipe: a worker that outlives the run and inherited the
    # pipe would otherwise keep the driver waiting for end-of-file.
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(command(args, peer, n, run), cwd=args.workdir, stdout=out,
                                stderr=log, text=True, start_new_session=True)
        timed_out = False
        try:
            proc.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _stop(proc)
        except KeyboardInterrupt:
            _stop(proc)
            raise
        out.seek(0)
        lines = [line for line in out.read().splitlines() if line.startswith("{")]
    rec = json.loads(lines[-1]) if lines else failed
    if timed_out:
        rec["errors"]["fatal"] = (f"hard timeout after {args.timeout} s (TIMEOUT=...): killed; "
                                  "workloads finished before are kept")
    elif not lines:
        rec["errors"]["fatal"] = f"exit code {proc.returncode} and no result line (see the .log)"
    rec["driver_wall_s"] = round(time.monotonic() - t0, 1)
    return rec


def main():
    args = parse_args()
    unknown = [p for p in args.peers.split() if p != "zmq" and p not in ADAPTERS]
    if unknown:
        print(f"unknown peers {unknown}; known: zmq {' '.join(ADAPTERS)}", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    os.makedirs(args.workdir, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    raw, md, logpath = (os.path.join(args.out, f"{stamp}.{ext}") for ext in ("jsonl", "md", "log"))
    plan = [(run, peer, n) for run in range(1, args.runs + 1) for peer in args.peers.split()
            for n in ([1] if peer == "zmq" else [int(x) for x in args.ns.split()])]
    print(f"{len(plan)} runs, up to {args.timeout} s each; log: {logpath}", file=sys.stderr)
    try:
        with open(raw, "a") as sink, open(logpath, "a") as log:
            for run, peer, n in plan:
                print(f"== {time.strftime('%H:%M:%S')} {peer} N={n} run {run}", file=sys.stderr,
                      flush=True)
                log.write(f"== {time.strftime('%H:%M:%S')} {peer} N={n} run {run}\n")
                log.flush()
                rec = run_one(args, peer, n, run, log)
                sink.write(json.dumps(rec) + "\n")
                sink.flush()
                status = "; ".join(f"{k}: {v}" for k, v in rec["errors"].items()) or "ok"
                print(f"   {rec.get('driver_wall_s', 0)} s, {report.one_line(status, 300)}",
                      file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("interrupted: reporting the runs finished so far", file=sys.stderr)
    if os.path.exists(raw) and os.path.getsize(raw):
        table = report.markdown(report.load([raw]))
        with open(md, "w") as f:
            f.write(table)
        sys.stdout.write(table)
        print(f"results: {raw}  table: {md}  log: {logpath}", file=sys.stderr)
        return 0
    print("no run finished: nothing to report", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
