#!/usr/bin/env python3
"""A TEST SHIM, not LSF: bsub, bjobs and bkill backed by the real Slurm the tests start.

No LSF server can be installed here (none is packaged for Debian or PyPI). Called as
bsub/bjobs/bkill (a link's name, or ``lsf_shim.py bsub ...``), it lets hpclaunch's LSF
code really submit, poll and cancel jobs that run under a batch scheduler, while
printing LSF's documented message formats:
  bsub < script      "Job <123> is submitted to default queue <normal>."  (#BSUB -J name[1-N],
                     -o with %J/%I, -n, -W minutes, -q; -R/-P are accepted and not enforced)
  bjobs -a -o "jobid jobindex stat exit_code" -json ID...   LSF 10.1 customized JSON output,
                     one record per array element, {"JOBID": .., "ERROR": "Job <ID> is not found"}
  bkill ID...        "Job <123> is being terminated"
Jobs see LSB_JOBID, LSB_JOBINDEX and LSB_JOBNAME as under LSF. Nothing else of LSF is imitated.
"""

import json
import os
import shlex
import subprocess
import sys

OPTIONS_WITH_VALUE = {"-J", "-o", "-e", "-n", "-q", "-W", "-R", "-P", "-cwd", "-oo", "-eo"}
#: Slurm state -> LSF STAT, and the exit code LSF shows for a job that ended that way.
STATES = {"PENDING": "PEND", "CONFIGURING": "PEND", "RUNNING": "RUN", "COMPLETING": "RUN",
          "SUSPENDED": "USUSP", "COMPLETED": "DONE", "CANCELLED": "EXIT", "FAILED": "EXIT",
          "TIMEOUT": "EXIT", "NODE_FAIL": "EXIT", "OUT_OF_MEMORY": "EXIT"}
EXIT_CODES = {"CANCELLED": "130", "FAILED": "1", "TIMEOUT": "140", "NODE_FAIL": "1",
              "OUT_OF_MEMORY": "137"}


def parse_options(tokens):
    options, i = {}, 0
    while i < len(tokens):
        if tokens[i] in OPTIONS_WITH_VALUE and i + 1 < len(tokens):
            options[tokens[i].lstrip("-").rstrip("o") if tokens[i] in ("-oo", "-eo")
                    else tokens[i].lstrip("-")] = tokens[i + 1]
            i += 2
        else:
            i += 1
    return options


def bsub(argv):
    if argv or sys.stdin.isatty():
        sys.stderr.write("bsub (hpclaunch test shim): only `bsub < script` is supported\n")
        return 255
    script = sys.stdin.read()
    directives = []
    for line in script.splitlines():
        if line.startswith("#BSUB"):
            directives += shlex.split(line[len("#BSUB"):])
    options = parse_options(directives)
    name, array = options.get("J", "NONAME"), None
    if name.endswith("]") and "[" in name:
        name, array = name[:-1].split("[", 1)
    wrapper = ("#!/bin/bash\n"
               "export LSB_JOBID=${SLURM_ARRAY_JOB_ID:-$SLURM_JOB_ID}\n"
               "export LSB_JOBINDEX=${SLURM_ARRAY_TASK_ID:-0}\n"
               f"export LSB_JOBNAME={shlex.quote(name)}\n"
               "exec /bin/bash -s <<'HPCLAUNCH_LSF_SHIM_SCRIPT'\n"
               f"{script}\nHPCLAUNCH_LSF_SHIM_SCRIPT\n")

    def slurm_pattern(path):
        return path.replace("%J", "%A" if array else "%j").replace("%I", "%a")

    argv = ["sbatch", "--parsable", "--job-name", name,
            "--output", slurm_pattern(options.get("o", "/dev/null"))]
    if "e" in options:
        argv += ["--error", slurm_pattern(options["e"])]
    if array:
        argv += ["--array", array]
    if "n" in options:
        argv += ["--ntasks", options["n"]]
    if "W" in options:
        hours, _, minutes = options["W"].rpartition(":")
        argv += ["--time", str(int(hours or 0) * 60 + int(minutes))]
    if "q" in options:
        argv += ["--partition", options["q"]]
    argv += ["--chdir", options.get("cwd", os.getcwd())]
    result = subprocess.run(argv, input=wrapper, capture_output=True, text=True)
    if result.returncode != 0:
        if "q" in options and "partition" in result.stderr.lower():
            sys.stderr.write(f"{options['q']}: No such queue. Job not submitted.\n")
        else:
            sys.stderr.write(result.stderr)
        return 255
    job_id = result.stdout.strip().split(";")[0]
    queue = options.get("q")
    print(f"Job <{job_id}> is submitted to queue <{queue}>." if queue
          else f"Job <{job_id}> is submitted to default queue <normal>.")
    return 0


def bjobs(argv):
    if "-json" not in argv or "-o" not in argv:
        sys.stderr.write('bjobs (hpclaunch test shim): only bjobs [-a] -o "FIELDS" -json '
                         "ID... is supported\n")
        return 255
    fields = argv[argv.index("-o") + 1].split()
    ids = [a for i, a in enumerate(argv) if not a.startswith("-") and argv[i - 1] != "-o"]
    result = subprocess.run(["squeue", "--noheader", "--array", "--states=all",
                             "--format=%i|%T", *([f"--jobs={','.join(ids)}"] if ids else [])],
                            capture_output=True, text=True)
    seen, records = set(), []
    for line in result.stdout.splitlines():
        task, _, slurm_state = line.strip().partition("|")
        job_id, _, index = task.partition("_")
        seen.add(job_id)
        values = {"jobid": job_id, "jobindex": index or "0",
                  "stat": STATES.get(slurm_state, "UNKWN"),
                  "exit_code": EXIT_CODES.get(slurm_state, "")}
        records.append({f.upper(): values.get(f.lower(), "") for f in fields})
    for job_id in ids:
        if job_id not in seen:
            records.append({"JOBID": job_id, "ERROR": f"Job <{job_id}> is not found"})
    print(json.dumps({"COMMAND": "bjobs", "JOBS": len(records), "RECORDS": records}, indent=2))
    return 0


def bkill(argv):
    status = 0
    for job_id in [a for a in argv if not a.startswith("-")]:
        if subprocess.run(["scancel", job_id], capture_output=True).returncode == 0:
            print(f"Job <{job_id}> is being terminated")
        else:
            sys.stderr.write(f"Job <{job_id}>: No matching job found\n")
            status = 255
    return status


COMMANDS = {"bsub": bsub, "bjobs": bjobs, "bkill": bkill}

if __name__ == "__main__":
    # Called through a link named bsub/bjobs/bkill, or as `lsf_shim.py bsub ARGS...`.
    command, args = os.path.basename(sys.argv[0]), sys.argv[1:]
    if command not in COMMANDS and args and args[0] in COMMANDS:
        command, args = args[0], args[1:]
    if command not in COMMANDS:
        sys.exit(f"usage: lsf_shim.py {{{','.join(COMMANDS)}}} ARGS...")
    sys.exit(COMMANDS[command](args))
