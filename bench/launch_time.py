#!/usr/bin/env python3
"""Time from ``hpclaunch start`` to N engines registered, on the real batch systems here.

Issue 4's figures: Slurm with N = 8, 64, 256 (one job with srun fan-out, and a job array)
and Grid Engine with N = 8 (array). Each case makes a fresh profile, runs
``hpclaunch start --profile P -n N --daemonize`` (which returns once all N engines have
registered), runs one map over every engine to show they work, then ``hpclaunch stop``.
The time is the wall time of ``start``: controller up + render + submit + pending +
running + every engine imported and registered. Prints one table; needs the batch
systems running (scripts/slurm-setup.sh, scripts/sge-setup.sh).

    python bench/launch_time.py                        # every case
    python bench/launch_time.py slurm:one-job:256      # one case (system:shape:N)

On this 2-core box Slurm's node advertises 64 CPUs (scripts/slurm-setup.sh), so cases
above 64 engines ask for ``--overcommit`` (several tasks per advertised CPU).
"""

import dataclasses
import os
import subprocess
import sys
import tempfile
import time

CASES = ["slurm:one-job:8", "slurm:array:8", "slurm:one-job:64", "slurm:array:64",
         "slurm:one-job:256", "sge:array:8"]
SLURM_CPUS = 64


def hpclaunch(env, *args, timeout=900):
    return subprocess.run([sys.executable, "-m", "hpclaunch", *args], env=env,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def make_profile(env, name, system, **fields):
    from hpclaunch.launch import load_profile, profile_file
    from hpclaunch.protocol import paths

    made = hpclaunch(env, "profile", "create", name, "--system", system, "--force")
    if made.returncode != 0:
        raise SystemExit(made.stderr)
    pdir = paths.profile_dir(name)
    profile = dataclasses.replace(load_profile(pdir), **fields)
    profile.save(profile_file(pdir))


def run_case(case, env):
    system, shape, n = case.split(":")
    n = int(n)
    name = f"bench-{system}-{shape}-{n}"
    fields = {"job_shape": shape, "walltime": "00:20:00"}
    if system == "slurm" and n > SLURM_CPUS:
        fields["extra_directives"] = ["--overcommit"]
    make_profile(env, name, system, **fields)
    began = time.monotonic()
    started = hpclaunch(env, "start", "--profile", name, "-n", str(n), "--daemonize",
                        "--timeout", "600")
    elapsed = time.monotonic() - began
    if started.returncode != 0:
        hpclaunch(env, "stop", "--profile", name)
        return {"case": case, "error": (started.stdout + started.stderr)[-600:]}
    try:
        map_s = check_map(name, n)
    finally:
        stopped = hpclaunch(env, "stop", "--profile", name)
    return {"case": case, "start_s": elapsed, "map_s": map_s,
            "stop_ok": stopped.returncode == 0}


def check_map(name, n):
    import hpclaunch as hl

    with hl.Client(profile=name, timeout=60) as rc:
        assert len(rc.ids) == n, f"{len(rc.ids)} engines registered, expected {n}"
        began = time.monotonic()
        squares = rc[:].map_sync(lambda x: x * x, range(4 * n))
        assert squares == [x * x for x in range(4 * n)]
        return time.monotonic() - began


def main(argv):
    cases = argv or CASES
    home = tempfile.mkdtemp(prefix="hpclaunch-launch-bench-")
    os.environ["HPCLAUNCH_DIR"] = home   # profiles live on the "shared" file system here
    env = dict(os.environ)
    print(f"# hpclaunch start -> N engines registered (load average before: "
          f"{os.getloadavg()[0]:.1f}, {os.cpu_count()} cores)")
    print("| system | job shape | N | start -> all registered (s) | map over all (s) |")
    print("|---|---|---|---|---|")
    for case in cases:
        result = run_case(case, env)
        system, shape, n = case.split(":")
        if "error" in result:
            print(f"| {system} | {shape} | {n} | failed: {result['error']!r} | |")
        else:
            print(f"| {system} | {shape} | {n} | {result['start_s']:.1f} | "
                  f"{result['map_s']:.2f} |", flush=True)
    print(f"(load average after: {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main(sys.argv[1:])
