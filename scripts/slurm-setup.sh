#!/usr/bin/env bash
# Install and start a single-node real Slurm (Debian 12: slurm-wlm 22.05 + munge) for the
# hpclaunch Slurm tests. Needs root and apt. Idempotent: a Slurm that already answers is left
# exactly as it is (its configuration is not rewritten under jobs that may be running).
#
#   scripts/slurm-setup.sh [CPUS]     CPUS the node advertises (default 64)
#
# Why each odd setting is there:
#  - SlurmdParameters=config_overrides lets the node advertise more CPUs than the box has, so a
#    2-core machine can run 64 one-CPU engine tasks; without it slurmd marks the node INVAL/DRAIN.
#  - MpiDefault=none: MPI users pass `srun --mpi=pmi2` themselves (never install libpmix-dev:
#    Debian's slurmd then hangs launching steps).
#  - No accounting daemon (AccountingStorageType=none), so sacct answers "accounting storage is
#    disabled"; MinJobAge=600 keeps finished jobs in `squeue --states=all` for 10 minutes instead.
#  - All state lives under $SLURM_TMP (default /tmp/hpclaunch-slurm); remove it for a fresh start.
set -euo pipefail

CPUS="${1:-64}"
SLURM_TMP="${SLURM_TMP:-/tmp/hpclaunch-slurm}"
export DEBIAN_FRONTEND=noninteractive

say() { printf 'slurm-setup: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (it installs packages and starts slurmctld/slurmd as root)"

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    command -v apt-get >/dev/null || die "no apt-get: install slurm-wlm and munge by hand"
    say "installing slurm-wlm and munge with apt-get"
    apt-get update -qq
    apt-get install -y -qq slurm-wlm munge >/dev/null
fi

# munge: one key, one daemon. Slurm authenticates every RPC through it.
mkdir -p /etc/munge /var/log/munge /run/munge /var/lib/munge
[ -s /etc/munge/munge.key ] || head -c 1024 /dev/urandom >/etc/munge/munge.key
chown -R munge:munge /etc/munge /var/log/munge /run/munge /var/lib/munge
chmod 400 /etc/munge/munge.key
# munged runs as its own user, which owns its key and log dir (as root it warns they are insecure).
pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged

node_state() { sinfo -h -o %t 2>/dev/null | head -n1 || true; }

HOST="$(hostname)"
case "$(node_state)" in
    idle|mix|alloc) say "Slurm is already up (node $HOST is $(node_state)); leaving it alone"
                    exit 0 ;;
esac

if ! pgrep -x slurmctld >/dev/null; then
    mkdir -p /etc/slurm "$SLURM_TMP"/{spool,state,log}
    cat >/etc/slurm/slurm.conf <<CONF
# Written by hpclaunch scripts/slurm-setup.sh: a one-node test cluster.
ClusterName=hpclaunch
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$SLURM_TMP/state
SlurmdSpoolDir=$SLURM_TMP/spool
SlurmctldLogFile=$SLURM_TMP/log/slurmctld.log
SlurmdLogFile=$SLURM_TMP/log/slurmd.log
SlurmctldPidFile=$SLURM_TMP/slurmctld.pid
SlurmdPidFile=$SLURM_TMP/slurmd.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
SlurmdParameters=config_overrides
MinJobAge=600
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
NodeName=$HOST CPUs=$CPUS RealMemory=16000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
    say "wrote /etc/slurm/slurm.conf ($CPUS CPUs on $HOST, state in $SLURM_TMP)"
fi

pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd

for _ in $(seq 1 40); do
    state="$(node_state)"
    case "$state" in
        idle|mix|alloc) say "Slurm is up: node $HOST is $state"; exit 0 ;;
        drain*|inval*|down*) scontrol update nodename="$HOST" state=resume 2>/dev/null || true ;;
    esac
    sleep 0.5
done
die "Slurm did not come up in 20 s (node state: '${state:-none}'); see $SLURM_TMP/log/slurmctld.log and slurmd.log"
