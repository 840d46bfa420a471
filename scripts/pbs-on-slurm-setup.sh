#!/usr/bin/env bash
# Torque-style qsub/qstat/qdel on top of the project's real single-node Slurm, for the hpclaunch
# PBS (Torque dialect) tests. No PBS server can be installed here (none is packaged for Debian 12
# or PyPI), so these are Debian's slurm-wlm-torque Perl wrappers, written by SchedMD.
#
#   scripts/pbs-on-slurm-setup.sh [PREFIX]   PREFIX defaults to /tmp/hpclaunch-pbs-on-slurm;
#                                            then put PREFIX/bin first on PATH.
#
# Needs root and apt. Idempotent: an existing PREFIX/bin/qsub is kept. Why it looks like this:
#  - slurm-wlm-torque Conflicts with gridengine-client (both own /usr/bin/qsub), so it is never
#    installed: the .deb is unpacked into PREFIX and only its Perl dependencies are installed.
#  - The wrappers run sbatch/srun/scancel from their own directory, hence the symlinks into PREFIX/bin.
#  - sbatch itself reads the #PBS lines (-N, -l walltime/nodes/ppn, -t, -j, -o); the qsub wrapper
#    adds its own -o/-e on the command line, so hpclaunch passes -o and -j oe to qsub explicitly.
#  - qsub prints Slurm's bare "123" where Torque prints "123.server" ("123[].server" for arrays).
#  - qstat knows no arrays: `qstat -f ID` shows the Slurm job ID (the array's first task); jobs
#    see SLURM_* variables only (no PBS_JOBID / PBS_ARRAYID).
set -euo pipefail

PREFIX="${1:-/tmp/hpclaunch-pbs-on-slurm}"
HERE="$(cd "$(dirname "$0")" && pwd)"
export DEBIAN_FRONTEND=noninteractive

say() { printf 'pbs-on-slurm-setup: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (it installs the wrappers' Perl modules with apt-get)"

bash "$HERE/slurm-setup.sh"

if [ ! -x "$PREFIX/bin/qsub" ]; then
    command -v apt-get >/dev/null || die "no apt-get: install slurm-wlm-torque's files by hand"
    if ! perl -MSlurm -MSwitch -e1 2>/dev/null; then
        say "installing libslurm-perl, libslurmdb-perl and libswitch-perl with apt-get"
        apt-get install -y -qq --no-install-recommends \
            libslurm-perl libslurmdb-perl libswitch-perl >/dev/null \
            || { apt-get update -qq && apt-get install -y -qq --no-install-recommends \
                     libslurm-perl libslurmdb-perl libswitch-perl >/dev/null; }
    fi
    work="$(mktemp -d /tmp/hpclaunch-pbsdeb.XXXXXX)"
    trap 'rm -rf "$work"' EXIT
    (cd "$work" && apt-get download -q slurm-wlm-torque >/dev/null 2>&1) \
        || die "apt-get download slurm-wlm-torque failed (run apt-get update?)"
    dpkg-deb -x "$work"/slurm-wlm-torque_*.deb "$work/root"
    mkdir -p "$PREFIX"
    rm -rf "$PREFIX/bin.new"
    mv "$work/root/usr/bin" "$PREFIX/bin.new"
    for tool in sbatch salloc srun squeue scancel scontrol sinfo; do
        ln -sf "$(command -v "$tool")" "$PREFIX/bin.new/$tool"
    done
    rm -rf "$PREFIX/bin"
    mv "$PREFIX/bin.new" "$PREFIX/bin"
    say "Torque-style wrappers in $PREFIX/bin"
fi

PATH="$PREFIX/bin:$PATH" qstat >/dev/null 2>&1 || [ $? -eq 153 ] \
    || die "$PREFIX/bin/qstat does not run; check the Perl modules (perl -MSlurm -e1)"
say "PBS-on-Slurm ready: PATH=$PREFIX/bin:\$PATH"
