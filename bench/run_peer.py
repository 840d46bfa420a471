#!/usr/bin/env python3
"""Run the workloads against one peer with N workers; print JSON lines on stdout.

    python run_peer.py --peer ipp -n 2 [--run 1] [--only latency,bandwidth]
                       [--budget 270] [--quick] [--set map_tasks=5000 ...]

A line is printed after 'start' and after every workload (``"partial": true``) and a final
line at the end: a driver that must kill this process on its hard timeout still keeps what
was measured. The adapter is always stopped and leftover descendants are ended by PID.
"""

import argparse
import json
import os
import platform
import signal
import socket
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH_HOME = os.environ.setdefault("BENCH_HOME", "/tmp/hpclaunch-bench/home")


def _isolate_environment():
    """Workers must import benchkit.tasks, and no tool may write under $HOME."""
    path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = HERE + (os.pathsep + path if path else "")
    for var, sub in (("HPCLAUNCH_DIR", "hpclaunch"), ("IPYTHONDIR", "ipython"),
                     ("JUPYTER_CONFIG_DIR", "jupyter"), ("JUPYTER_DATA_DIR", "jupyter-data"),
                     ("JUPYTER_RUNTIME_DIR", "jupyter-runtime"), ("DASK_CONFIG", "dask")):
        os.environ.setdefault(var, os.path.join(BENCH_HOME, sub))
        os.makedirs(os.environ[var], exist_ok=True)
    # parsl starts its helper scripts by name: this venv's bin must be on PATH
    venv_bin = os.path.dirname(sys.executable)
    if venv_bin not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = venv_bin + os.pathsep + os.environ.get("PATH", "")
    if HERE not in sys.path:
        sys.path.insert(0, HERE)


_isolate_environment()

from benchkit import procs, workloads  # noqa: E402
from benchkit.adapters import get_adapter  # noqa: E402
from benchkit.adapters.base import Unsupported  # noqa: E402


class BudgetExhausted(BaseException):
    """The in-process time budget ran out: remaining workloads are abandoned. A BaseException,
    so that a peer library's ``except Exception`` around its waits cannot swallow it."""


def _on_alarm(signum, frame):
    raise BudgetExhausted("time budget exhausted; remaining workloads abandoned")


def _on_term(signum, frame):
    raise SystemExit(f"terminated by signal {signum} (the driver's hard timeout)")


def parse_params(quick, overrides):
    params = dict(workloads.QUICK if quick else workloads.DEFAULTS)
    for item in overrides or []:
        name, _, value = item.partition("=")
        if name not in params:
            raise SystemExit(f"unknown param {name!r}; known: {', '.join(params)}")
        params[name] = int(value)
    return params


def emit(rec, partial):
    rec["partial"] = partial
    sys.stdout.write(json.dumps(rec) + "\n")
    sys.stdout.flush()


def run_workloads(ad, rec, wanted, params, tag):
    rec["metrics"]["start"] = workloads.w_start(ad, params)
    rec["processes_started"] = procs.n_descendants()
    emit(rec, partial=True)
    for w in wanted:
        if w in ad.not_defined:
            rec["skipped"][w] = ad.not_defined[w]
            continue
        print(f"[{tag}] {w} ...", file=sys.stderr, flush=True)
        try:
            rec["metrics"][w] = workloads.FUNCS[w](ad, params)
        except Unsupported as e:
            rec["skipped"][w] = str(e)
        except Exception as e:  # record it and go on with the next workload
            rec["errors"][w] = f"{type(e).__name__}: {e}"
            traceback.print_exc()
        emit(rec, partial=True)
    try:
        rec["info"] = ad.info()
    except Exception as e:
        rec["errors"]["info"] = f"{type(e).__name__}: {e}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--peer", required=True)
    ap.add_argument("-n", "--workers", type=int, required=True)
    ap.add_argument("--run", type=int, default=1)
    ap.add_argument("--only", default=",".join(workloads.ALL[1:]),
                    help="comma list of workloads after 'start' (which always runs)")
    ap.add_argument("--budget", type=int, default=270,
                    help="seconds before the remaining workloads are abandoned")
    ap.add_argument("--quick", action="store_true", help="small settings to check the harness")
    ap.add_argument("--set", action="append", metavar="NAME=INT", help="override one param")
    args = ap.parse_args()
    params = parse_params(args.quick, args.set)
    wanted = [w for w in workloads.ALL[1:] if w in args.only.split(",")]
    unknown = set(args.only.split(",")) - set(workloads.ALL) - {""}
    if unknown:
        raise SystemExit(f"unknown workloads {sorted(unknown)}; known: {', '.join(workloads.ALL)}")

    rec = {"peer": args.peer, "n": args.workers, "run": args.run,
           "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "host": socket.gethostname(), "cpus": os.cpu_count(),
           "python": platform.python_version(), "executable": sys.executable,
           "loadavg_before": procs.loadavg(), "params": params,
           "metrics": {}, "errors": {}, "skipped": {}}
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.signal(signal.SIGTERM, _on_term)
    signal.alarm(args.budget)
    t_all = time.perf_counter()
    ad = None
    try:
        ad = get_adapter(args.peer)(args.workers)
        run_workloads(ad, rec, wanted, params, f"{args.peer} n={args.workers}")
    except BaseException as e:  # noqa: B036 - the record must be printed whatever happened
        rec["errors"]["fatal"] = f"{type(e).__name__}: {e}"
        traceback.print_exc()
    finally:
        signal.alarm(60)  # bound the shutdown too
        try:
            if ad is not None:
                ad.stop()
        except BaseException as e:  # noqa: B036
            rec["errors"]["stop"] = f"{type(e).__name__}: {e}"
        signal.alarm(0)
        killed = procs.kill_leftovers()
        if killed:
            rec["leftover_pids_killed"] = killed
        rec["wall_s"] = time.perf_counter() - t_all
        rec["loadavg_after"] = procs.loadavg()
        emit(rec, partial=False)
    return 1 if "fatal" in rec["errors"] else 0


if __name__ == "__main__":
    code = main()
    sys.stderr.flush()
    os._exit(code)  # some peers leave non-daemon threads behind after stop(); don't hang
