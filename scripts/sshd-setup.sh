#!/usr/bin/env bash
# A private OpenSSH sshd for the hpclaunch SSH-tunnel tests: its own host key, its own user key,
# root login by key only, listening on one address and port. Never touches /etc/ssh/sshd_config
# or the system sshd. Needs root (sshd switches users) and, the first time, apt-get.
#
#   scripts/sshd-setup.sh DIR PORT [LISTEN]     start; writes DIR/{host_ed25519,id_ed25519,
#                                               authorized_keys,sshd_config,sshd.pid,sshd.log}
#   scripts/sshd-setup.sh --stop DIR            stop the sshd started with DIR
#
# Run it inside a network namespace (ip netns exec NS scripts/sshd-setup.sh ...) to make a
# "login node". Gotchas it handles:
#  - a fresh Debian image has the ssh client only: openssh-server comes from apt (its postinst
#    makes /etc/ssh host keys and tries invoke-rc.d, harmless without systemd);
#  - /run/sshd (the privilege-separation dir) must exist or sshd refuses to start;
#  - StrictModes no: the key files live under /tmp;
#  - sshd daemonizes: wait for its pid file before anyone connects.
set -euo pipefail
say() { printf 'sshd-setup: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

if [ "${1:-}" = --stop ]; then
    DIR=${2:?usage: sshd-setup.sh --stop DIR}
    if [ -s "$DIR/sshd.pid" ]; then
        kill "$(cat "$DIR/sshd.pid")" 2>/dev/null || true
        rm -f "$DIR/sshd.pid"
    fi
    exit 0
fi

DIR=${1:?usage: sshd-setup.sh DIR PORT [LISTEN]}; PORT=${2:?usage: sshd-setup.sh DIR PORT [LISTEN]}
LISTEN=${3:-127.0.0.1}
[ "$(id -u)" -eq 0 ] || die "needs root (sshd must switch to the logged-in user)"

if [ ! -x /usr/sbin/sshd ]; then
    command -v apt-get >/dev/null || die "no /usr/sbin/sshd and no apt-get: install openssh-server"
    say "installing openssh-server with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends openssh-server >/tmp/hpclaunch-sshd-apt.log 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends \
             openssh-server >/tmp/hpclaunch-sshd-apt.log 2>&1; } \
        || die "apt-get install openssh-server failed: see /tmp/hpclaunch-sshd-apt.log"
fi

mkdir -p "$DIR" /run/sshd
chmod 700 "$DIR"; chmod 755 /run/sshd
[ -f "$DIR/host_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -f "$DIR/host_ed25519"
[ -f "$DIR/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C hpclaunch-test -f "$DIR/id_ed25519"
cp "$DIR/id_ed25519.pub" "$DIR/authorized_keys"; chmod 600 "$DIR/authorized_keys"
SFTP=/usr/lib/openssh/sftp-server
[ -x "$SFTP" ] || SFTP=internal-sftp
cat > "$DIR/sshd_config" <<CONF
Port $PORT
ListenAddress $LISTEN
HostKey $DIR/host_ed25519
PidFile $DIR/sshd.pid
AuthorizedKeysFile $DIR/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowTcpForwarding yes
GatewayPorts no
PermitTunnel no
X11Forwarding no
PrintMotd no
UseDNS no
MaxStartups 100:30:200
MaxSessions 100
LogLevel VERBOSE
Subsystem sftp $SFTP
CONF
rm -f "$DIR/sshd.pid"
/usr/sbin/sshd -t -f "$DIR/sshd_config" || die "sshd rejected $DIR/sshd_config"
/usr/sbin/sshd -f "$DIR/sshd_config" -E "$DIR/sshd.log"
for _ in $(seq 1 100); do [ -s "$DIR/sshd.pid" ] && break; sleep 0.05; done
[ -s "$DIR/sshd.pid" ] || die "sshd did not start: see $DIR/sshd.log"
say "sshd pid $(cat "$DIR/sshd.pid") on $LISTEN:$PORT, user key $DIR/id_ed25519"
