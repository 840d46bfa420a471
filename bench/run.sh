#!/usr/bin/env bash
# hpclaunch benchmark: hpclaunch and its peers, same workloads, one invocation (./dev bench).
#
# Makes (or reuses) the peers venv, then runs every peer x N x repetition, each run its own
# process under a hard timeout, and prints the table. Results: bench/results/<stamp>.{jsonl,md,log}
#
# Environment (defaults):
#   PEERS="zmq hpclaunch ipp dask pool parsl"   NS="2 8"   RUNS=2
#   ONLY=""            comma list of workloads: idle,throughput,map,automap,latency,bandwidth
#   QUICK=0            1 = small settings, to check the harness (not for comparing)
#   SET=""             per-workload overrides, e.g. SET="map_tasks=5000 latency_iters=200"
#   TIMEOUT=300        hard limit per run, seconds
#   PYTHON=<repo>/.venv/bin/python   interpreter that has hpclaunch installed
#   PEERS_VENV=/tmp/hpclaunch-bench/peers-venv   BASE_PYTHON=python3 (to create it)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
case "${1:-}" in
  "") ;;
  -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "bench/run.sh takes no arguments (got '$1'); set knobs in the environment, see --help" >&2
     exit 2 ;;
esac
PEERS_VENV=${PEERS_VENV:-/tmp/hpclaunch-bench/peers-venv}
has_hpclaunch() { [ -x "$1" ] && "$1" -c 'import hpclaunch' >/dev/null 2>&1; }
# PYTHON may also name the base interpreter ./dev made .venv with: use it only if it has hpclaunch.
if [ -n "${PYTHON:-}" ] && ! has_hpclaunch "$PYTHON" && has_hpclaunch "$ROOT/.venv/bin/python"; then
  echo "note: PYTHON=$PYTHON cannot import hpclaunch; using $ROOT/.venv/bin/python" >&2
  PYTHON=$ROOT/.venv/bin/python
fi
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
REQS=$HERE/requirements-peers.txt
STAMP_FILE=$PEERS_VENV/.bench-requirements

# (Re)install the peers venv only when it is missing or the pins changed.
if [ ! -x "$PEERS_VENV/bin/python" ] || ! cmp -s "$REQS" "$STAMP_FILE"; then
  echo "preparing the peers venv at $PEERS_VENV (pins: $REQS) ..." >&2
  [ -x "$PEERS_VENV/bin/python" ] || "${BASE_PYTHON:-python3}" -m venv "$PEERS_VENV"
  "$PEERS_VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQS" \
    || { echo "could not install the peers from $REQS into $PEERS_VENV" >&2; exit 1; }
  cp "$REQS" "$STAMP_FILE"
fi
if ! has_hpclaunch "$PYTHON"; then
  echo "note: $PYTHON cannot import hpclaunch (run ./dev bench, or set PYTHON=...); hpclaunch runs will fail" >&2
fi

args=(--peers "${PEERS:-zmq hpclaunch ipp dask pool parsl}" --ns "${NS:-2 8}"
      --runs "${RUNS:-2}" --timeout "${TIMEOUT:-300}"
      --peers-python "$PEERS_VENV/bin/python" --hpclaunch-python "$PYTHON")
[ -n "${ONLY:-}" ] && args+=(--only "$ONLY")
[ "${QUICK:-0}" = 1 ] && args+=(--quick)
for item in ${SET:-}; do args+=(--set "$item"); done

export PYTHONDONTWRITEBYTECODE=1 BENCH_HOME=${BENCH_HOME:-/tmp/hpclaunch-bench/home}
exec "$PEERS_VENV/bin/python" "$HERE/drive.py" "${args[@]}"
