"""Round trip and push/pull bandwidth through one SSH tunnel (OpenSSH, paramiko) vs direct,
with CurveZMQ on and off, all in one run. Prints a table; asserts nothing.

    sudo /tmp/dev/bin/python bench/tunnel.py [--iters 300] [--mb 100] [--reps 3]

The "cluster" is a network namespace made by scripts/netns.sh (root + iproute2): controllers
listen on 10.78.0.1 inside it, one with Curve (the default beyond loopback) and one with
--no-curve, each with one engine. "direct" clients run inside the namespace (they can reach
10.78.0.1); tunnel clients run here and go through the namespace's sshd. Everything is on
this machine; every process, sshd and the namespace are removed at the end.
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
NETNS = os.path.join(os.path.dirname(HERE), "scripts", "netns.sh")
SSH_CONFIG = ("Host *\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n"
              "  LogLevel ERROR\n")


def measure(client, iters, mb, reps):
    """(round trip ms median, push MB/s median, pull MB/s median) against one engine."""
    client.wait_for_engines(1, timeout=30)
    view = client[client.ids[0]]
    view.apply_sync(int)  # warm up (cloudpickle, the engine's first task)
    rtts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        view.apply_sync(int)
        rtts.append(time.perf_counter() - t0)
    blob = os.urandom(mb * 1024 * 1024)
    push, pull = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        view.push({"blob": blob}, block=True)
        push.append(mb / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        back = view.pull("blob", block=True)
        pull.append(mb / (time.perf_counter() - t0))
        assert len(back) == len(blob)
        del back
    view.execute("del blob", block=True)
    return {"rtt_ms": statistics.median(rtts) * 1000, "push_MBps": statistics.median(push),
            "pull_MBps": statistics.median(pull)}


def measure_main(args):
    """Inside the namespace: measure a direct client and print JSON."""
    import hpclaunch as hl

    with hl.Client(url_file=args.measure, timeout=20) as client:
        print(json.dumps(measure(client, args.iters, args.mb, args.reps)), flush=True)


def start_cluster(ns, pdir, curve, procs):
    in_ns = ["ip", "netns", "exec", ns, sys.executable]
    procs.append(subprocess.Popen(
        in_ns + ["-m", "hpclaunch.controller", "--ip", "10.78.0.1", "--profile-dir", pdir,
                 "--log-level", "WARNING"] + ([] if curve else ["--no-curve"]),
        stderr=subprocess.DEVNULL))
    engine_file = os.path.join(pdir, "security", "engine.json")
    deadline = time.monotonic() + 30
    while not os.path.exists(engine_file):
        if time.monotonic() > deadline:
            raise SystemExit(f"the controller in {pdir} did not start")
        time.sleep(0.1)
    procs.append(subprocess.Popen(in_ns + ["-m", "hpclaunch.engine", "--profile-dir", pdir,
                                           "--log-level", "WARNING"]))
    return os.path.join(pdir, "security", "client.json")


def run(args):
    import hpclaunch as hl

    work = tempfile.mkdtemp(prefix="hpclaunch-tunnel-bench-")
    os.environ["HPCLAUNCH_DIR"] = os.path.join(work, "hl")
    state = os.path.join(work, "netns")
    procs, rows = [], []
    try:
        subprocess.run(["bash", NETNS, "up", f"hlbench-{os.getpid()}", state, "22022"],
                       check=True, timeout=400)
        with open(os.path.join(state, "netns.env")) as f:
            env = dict(line.split("=", 1) for line in f.read().split())
        config = os.path.join(state, "ssh_config")
        with open(config, "w") as f:
            f.write(SSH_CONFIG)
        os.environ["HPCLAUNCH_SSH_CONFIG"] = config
        server = f"root@{env['LOGIN_IP']}:{env['SSH_PORT']}"
        for curve in (True, False):
            label = "curve" if curve else "no curve"
            files = start_cluster(env["NS"], os.path.join(work, "hl", f"profile_{label[:2]}"),
                                  curve, procs)
            done = subprocess.run(
                ["ip", "netns", "exec", env["NS"], sys.executable, __file__, "--measure", files,
                 "--iters", str(args.iters), "--mb", str(args.mb), "--reps", str(args.reps)],
                capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                raise SystemExit(f"direct measurement failed:\n{done.stderr}")
            rows.append(("direct", label, json.loads(done.stdout.strip().splitlines()[-1])))
            for backend, use_paramiko in (("openssh", False), ("paramiko", True)):
                with hl.Client(url_file=files, sshserver=server, sshkey=env["SSH_KEY"],
                               paramiko=use_paramiko, timeout=20) as client:
                    rows.append((backend, label, measure(client, args.iters, args.mb, args.reps)))
                print(f"measured {backend} ({label})", file=sys.stderr)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        subprocess.run(["bash", NETNS, "down", state], timeout=60)
        subprocess.run(["rm", "-rf", work])
    print(f"\none engine, {args.iters} round trips (median), {args.mb} MB push/pull "
          f"(median of {args.reps}); loopback veth + netns on this machine\n")
    print("| path | encryption | round trip (ms) | push (MB/s) | pull (MB/s) |")
    print("|---|---|---|---|---|")
    for path, label, m in rows:
        print(f"| {path} | {label} | {m['rtt_ms']:.2f} | {m['push_MBps']:.0f} | "
              f"{m['pull_MBps']:.0f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iters", type=int, default=300, help="round trips to time")
    parser.add_argument("--mb", type=int, default=100, help="megabytes pushed and pulled")
    parser.add_argument("--reps", type=int, default=3, help="push/pull repetitions")
    parser.add_argument("--measure", metavar="CLIENT_JSON", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure_main(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
