#!/usr/bin/env bash
# Install and start a single-host real Grid Engine cell (Debian 12: Son of Grid Engine 8.1.9,
# sge_qmaster + sge_execd on this machine) for the hpclaunch SGE tests. Needs root and apt.
# Idempotent: a cell that already answers keeps its configuration; only what is missing (a
# daemon, the submit host, the exec host, a parallel environment, the queue) is added.
#
#   scripts/sge-setup.sh [SLOTS]     slots of queue all.q (default 16)
#
# Why each odd step is there:
#  - The packages' init scripts must not start daemons during apt-get (policy-rc.d answers 101)
#    because the host aliasing below has to be in place first.
#  - host_aliases: SGE's commlib refuses a client whose IP reverse-resolves to another name than
#    gethostname() ("client IP resolved to host name localhost. This is not identical to ...").
#    When the host name maps to 127.0.0.1, "localhost" is aliased onto it.
#  - min_uid/min_gid 0: SGE refuses to run root's jobs otherwise (the tests run as root).
#  - accounting_flush_time 1 s: qacct knows how a job ended a second after it leaves qstat
#    (default 15 s), so a failed engine job reads FAILED rather than DONE.
#  - load_thresholds NONE: a busy 2-core machine would otherwise put the queue in alarm state and
#    jobs would stay pending; schedule_interval 1 s and flush_*_sec 1 start jobs within seconds.
#  - Parallel environments "smp" ($pe_slots: all slots on one host) and "mpi" ($fill_up), so a
#    profile with job_shape 'one-job' can ask for N slots with parallel_environment = "smp".
#  - Daemons are started by hand (no systemd); stop them with `qconf -ke $(hostname); qconf -km`.
set -euo pipefail

SLOTS="${1:-16}"
export SGE_ROOT=/var/lib/gridengine SGE_CELL=default DEBIAN_FRONTEND=noninteractive
HOST="$(hostname)"
COMMON="$SGE_ROOT/$SGE_CELL/common"

say() { printf 'sge-setup: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (it installs packages and starts sge_qmaster/sge_execd)"

# The host name must resolve (SGE resolves every host it talks to).
getent hosts "$HOST" >/dev/null || echo "127.0.0.1 $HOST" >>/etc/hosts

if [ ! -x /usr/sbin/sge_qmaster ] || [ ! -x /usr/sbin/sge_execd ] || ! command -v qsub >/dev/null; then
    command -v apt-get >/dev/null || die "no apt-get: install gridengine-master, -exec and -client by hand"
    for p in gridengine-common gridengine-master gridengine-exec gridengine-client; do
        printf '%s shared/gridengineconfig boolean true\n' "$p"
        printf '%s shared/gridenginecell string %s\n' "$p" "$SGE_CELL"
        printf '%s shared/gridenginemaster string %s\n' "$p" "$HOST"
    done | debconf-set-selections
    made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        made_policy=1
    fi
    install_packages() {
        apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=300 \
            gridengine-master gridengine-exec gridengine-client >/tmp/hpclaunch-sge-apt.log 2>&1
    }
    say "installing gridengine-master, gridengine-exec and gridengine-client with apt-get"
    if ! install_packages; then
        say "apt-get install failed; updating the package lists and trying once more"
        apt-get update -qq -o DPkg::Lock::Timeout=300 >>/tmp/hpclaunch-sge-apt.log 2>&1 || true
        install_packages || { if [ "$made_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
                     tail -30 /tmp/hpclaunch-sge-apt.log >&2
                     die "apt-get install failed; full log in /tmp/hpclaunch-sge-apt.log"; }
    fi
    if [ "$made_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
fi
[ -d "$COMMON" ] || die "$COMMON is missing: the gridengine packages did not create the cell " \
                        "(reinstall them with debconf shared/gridengineconfig=true)"

# Host aliasing and the master's name (written only when they differ, never under a live cell).
IP="$(getent ahostsv4 "$HOST" | awk 'NR==1{print $1}')"
REV="$(/usr/lib/gridengine/gethostbyaddr "$IP" 2>/dev/null | awk '/^Hostname:/{print $2}')"
if [ -n "$REV" ] && [ "$REV" != "$HOST" ] && [ "$(cat "$COMMON/host_aliases" 2>/dev/null)" != "$HOST $REV" ]; then
    echo "$HOST $REV" >"$COMMON/host_aliases"
    chown sgeadmin:sgeadmin "$COMMON/host_aliases"
fi
if [ "$(cat "$COMMON/act_qmaster" 2>/dev/null)" != "$HOST" ]; then
    echo "$HOST" >"$COMMON/act_qmaster"
    chown sgeadmin:sgeadmin "$COMMON/act_qmaster"
fi
mkdir -p /var/run/gridengine
chown sgeadmin:sgeadmin /var/run/gridengine

# qmaster: start it unless it runs, then wait until it answers.
pgrep -x sge_qmaster >/dev/null || /usr/sbin/sge_qmaster
for _ in $(seq 1 60); do qconf -sh >/dev/null 2>&1 && break; sleep 0.5; done
qconf -sh >/dev/null || die "sge_qmaster does not answer after 30 s; see /var/spool/gridengine/qmaster/messages"

CFG="$(mktemp -d /tmp/hpclaunch-sgecfg.XXXX)"
trap 'rm -rf "$CFG"' EXIT

# Cluster and scheduler configuration: modified only when a value differs.
# (qconf -M*/-A* read files whose *name* is the object's name.)
qconf -sconf >"$CFG/global"
if ! grep -Eq '^min_uid +0$' "$CFG/global" || ! grep -Eq '^min_gid +0$' "$CFG/global" \
        || ! grep -q 'accounting_flush_time=00:00:01' "$CFG/global"; then
    sed -i -e 's/^min_uid .*/min_uid                      0/' \
           -e 's/^min_gid .*/min_gid                      0/' \
           -e 's/^load_report_time .*/load_report_time             00:00:05/' \
           -e '/accounting_flush_time=/!s/accounting=true/accounting=true accounting_flush_time=00:00:01/' \
           "$CFG/global"
    qconf -Mconf "$CFG/global" >/dev/null
fi
qconf -ssconf >"$CFG/sched"
if ! grep -Eq '^schedule_interval +0:0:1$' "$CFG/sched"; then
    sed -i -e 's/^schedule_interval .*/schedule_interval                 0:0:1/' \
           -e 's/^flush_submit_sec .*/flush_submit_sec                  1/' \
           -e 's/^flush_finish_sec .*/flush_finish_sec                  1/' "$CFG/sched"
    qconf -Msconf "$CFG/sched" >/dev/null
fi
qconf -ss 2>/dev/null | grep -qx "$HOST" || qconf -as "$HOST" >/dev/null

if ! qconf -se "$HOST" >/dev/null 2>&1; then
    cat >"$CFG/exechost" <<EOF
hostname              $HOST
load_scaling          NONE
complex_values        NONE
user_lists            NONE
xuser_lists           NONE
projects              NONE
xprojects             NONE
usage_scaling         NONE
report_variables      NONE
EOF
    qconf -Ae "$CFG/exechost" >/dev/null
fi
for pe in smp mpi; do
    qconf -sp "$pe" >/dev/null 2>&1 && continue
    rule='$pe_slots'; [ "$pe" = mpi ] && rule='$fill_up'
    cat >"$CFG/$pe" <<EOF
pe_name            $pe
slots              999
user_lists         NONE
xuser_lists        NONE
start_proc_args    NONE
stop_proc_args     NONE
allocation_rule    $rule
control_slaves     TRUE
job_is_first_task  FALSE
urgency_slots      min
accounting_summary FALSE
qsort_args         NONE
EOF
    qconf -Ap "$CFG/$pe" >/dev/null
done

# execd, then the queue.
pgrep -x sge_execd >/dev/null || /usr/sbin/sge_execd
if ! qconf -sq all.q >/dev/null 2>&1; then
    qconf -sq | sed -e 's/^qname .*/qname                 all.q/' \
                    -e "s/^hostlist .*/hostlist              $HOST/" \
                    -e 's/^load_thresholds .*/load_thresholds       NONE/' \
                    -e 's/^pe_list .*/pe_list               smp mpi/' \
                    -e "s/^slots .*/slots                 $SLOTS/" \
                    -e 's#^shell .*#shell                 /bin/bash#' >"$CFG/all.q"
    qconf -Aq "$CFG/all.q" >/dev/null
    say "created queue all.q ($SLOTS slots on $HOST, parallel environments smp and mpi)"
fi

# Ready when the execd reports load: the queue instance has no state letters (no "au").
for _ in $(seq 1 60); do
    line="$(qstat -f 2>/dev/null | awk '/^all.q@/{print $6}' || true)"
    if qstat -f 2>/dev/null | grep -q '^all.q@' && [ -z "$line" ]; then
        say "Grid Engine is up: queue all.q@$HOST accepts jobs"
        exit 0
    fi
    sleep 0.5
done
die "queue all.q@$HOST is not ready after 30 s (state '${line:-none}'); see /var/spool/gridengine/execd/$HOST/messages"
