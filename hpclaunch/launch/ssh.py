"""The ``ssh`` batch system: engines on the hosts of a profile's ``hosts``, started over SSH.

The controller stays a local process (this is LocalSystem for it). Engines are
started detached (``nohup setsid``) so ``start --daemonize`` can return, and every
remote conversation is batched per host: one sftp (engine file, mode 0600 in a
0700 folder, unless ``shared_filesystem``) plus one ssh to start a host's engines,
one ssh per host to poll them, one to stop them. Each engine is recorded with its
host and remote pid, so ``stop`` from another shell reaches it again.
"""

import concurrent.futures
import dataclasses
import hashlib
import logging
import math
import os
import shlex
import socket
import time

from ..protocol import paths
from . import sshcmd
from .base import register
from .hugepages import SHELL_LINE as HUGE_PAGES_SHELL_LINE
from .local import LocalSystem
from .processes import ProcessRecord
from .profile import ProfileError

log = logging.getLogger("hpclaunch.launch")

#: Seconds a host's poll answer is reused (wait loops ask many times a second).
POLL_TTL = 1.0
#: Hosts talked to at once (one ssh process each), so 100 hosts do not take 100 round trips.
PARALLEL_HOSTS = 16

#: Start this host's engines, one per log path in "$@"; print each pid. ``{setup}`` is the
#: profile's env_setup, ``{engine}`` the engine command, ``{huge_pages}`` the line that
#: puts malloc on huge pages (hugepages.py) unless env_setup chose otherwise. setsid makes
#: each engine a process group leader, so stop also ends whatever the engine started.
START_SCRIPT = """\
cd || exit 1
{setup}
export PYTHONUNBUFFERED=1
{huge_pages}
if command -v setsid >/dev/null 2>&1; then detach=setsid; else detach=; fi
for log in "$@"; do
    nohup $detach {engine} </dev/null >"$log" 2>&1 &
    echo "hpclaunch-pid $!"
done
"""

#: Which of the pids in "$@" are still hpclaunch engines (a reused pid is not).
ALIVE_FUNCTION = """\
alive() { case $(ps -o args= -p "$1" 2>/dev/null) in *hpclaunch.engine*) return 0;; esac; return 1; }
"""
POLL_SCRIPT = ALIVE_FUNCTION + """\
for p in "$@"; do alive "$p" && echo "hpclaunch-alive $p"; done
exit 0
"""

#: $1 = seconds of grace, $2 = folder to remove ('' for none), then pids: SIGTERM their
#: process groups, SIGKILL what is left after the grace, print the survivors.
STOP_SCRIPT = ALIVE_FUNCTION + """\
ticks=$(($1 * 5)); dir=$2; shift 2
left=
for p in "$@"; do alive "$p" && left="$left $p"; done
for p in $left; do kill -TERM "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null; done
while [ -n "$left" ] && [ "$ticks" -gt 0 ]; do
    sleep 0.2 2>/dev/null || sleep 1
    ticks=$((ticks - 1))
    still=; for p in $left; do alive "$p" && still="$still $p"; done; left=$still
done
for p in $left; do kill -KILL "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null; done
[ -z "$left" ] || sleep 1
for p in $left; do alive "$p" && echo "hpclaunch-survivor $p"; done
[ -z "$dir" ] || rm -rf -- "$dir"
exit 0
"""


@dataclasses.dataclass
class HostStart:
    """What ``start`` runs for one host, in order (``hpclaunch render`` prints it)."""

    host: str
    roles: list
    logs: list
    #: sftp command and its batch (stdin) that copy the engine file; None on a shared file system
    copy: list
    copy_batch: str
    #: ssh command that starts the engines and prints their pids
    start: list


def plan_hosts(hosts, n, per_host=None, existing=()):
    """[(host, engines)] for ``n`` more engines: fill each host to ``per_host`` in order, or
    without it, always add to the host with the fewest engines (``existing`` counts)."""
    if not hosts:
        raise ProfileError("system = 'ssh' needs the hosts to start engines on: set hosts = "
                           "[\"node1\", \"me@node2:2222\"] in profile.toml")
    load = dict.fromkeys(hosts, 0)
    for record in existing:
        if record.host in load:
            load[record.host] += 1
    added = dict.fromkeys(hosts, 0)
    for _ in range(n):
        room = [h for h in load if per_host is None or load[h] < per_host]
        if not room:
            raise ProfileError(f"-n {n} engines do not fit on {len(load)} host(s) with "
                               f"engines_per_node = {per_host} ({sum(load.values())} running); "
                               "add hosts, raise engines_per_node or start fewer engines")
        host = room[0] if per_host else min(room, key=load.get)
        load[host] += 1
        added[host] += 1
    return [(h, k) for h, k in added.items() if k]


def _words(output, tag):
    """The values of the lines ``<tag> value`` in a remote script's output."""
    return [line.split(None, 1)[1].strip() for line in output.splitlines()
            if line.startswith(tag + " ") and len(line.split(None, 1)) == 2]


@register
class SshSystem(LocalSystem):
    """The controller here (as LocalSystem), engines on remote hosts over OpenSSH."""

    name = "ssh"

    def __init__(self, profile=None, profile_dir=None):
        super().__init__()
        self.profile = profile
        self.profile_dir = os.path.abspath(profile_dir) if profile_dir else None
        #: host -> (time of the poll, pids asked about, pids alive)
        self._polls = {}
        #: (host, pid) of ended engines whose logs were fetched (or tried) already
        self._fetched = set()

    @classmethod
    def for_profile(cls, profile, profile_dir):
        return cls(profile, profile_dir)

    # -- where things are on the hosts ---------------------------------------
    @property
    def remote_folder(self):
        """This cluster's folder on the hosts (relative to the remote home), or None when
        the hosts share this file system and use the profile dir itself."""
        if self.profile.shared_filesystem:
            return None
        origin = f"{socket.gethostname()}:{self.profile_dir}".encode()
        token = hashlib.sha256(origin).hexdigest()[:10]
        return f"{self.profile.remote_dir.rstrip('/')}/{os.path.basename(self.profile_dir)}-{token}"

    def _remote_path(self, local_path):
        folder = self.remote_folder
        return local_path if folder is None else f"{folder}/{os.path.basename(local_path)}"

    def _folder_of(self, record):
        """The folder ``start`` copied the engine file to on the record's host (read from the
        engine's own command line, so a later edit of remote_dir or another login node's
        name does not matter), or None when the host used this profile dir itself."""
        argv = record.cmdline
        if "--file" not in argv[:-1]:
            return None
        folder = os.path.dirname(argv[argv.index("--file") + 1])
        mine = os.path.basename(self.profile_dir) + "-"  # never remove a folder we did not make
        return folder if os.path.basename(folder).startswith(mine) else None

    # -- starting ------------------------------------------------------------
    def plan(self, argv, roles, logs_dir, existing=()):
        """The HostStarts that start one engine per role (log ``<logs_dir>/<role>.log``)."""
        argv = self._engine_argv_there(argv)
        script = START_SCRIPT.format(setup="\n".join(self.profile.env_setup),
                                     engine=shlex.join(argv), huge_pages=HUGE_PAGES_SHELL_LINE)
        remaining, planned = list(roles), []
        for host, count in plan_hosts(self.profile.hosts, len(roles),
                                      self.profile.engines_per_node, existing):
            batch, remaining = remaining[:count], remaining[count:]
            logs = [os.path.join(logs_dir, f"{role}.log") for role in batch]
            remote = sshcmd.sh_c(script, *(self._remote_path(path) for path in logs))
            copy_batch = self._copy_batch()
            planned.append(HostStart(
                host, batch, logs, sshcmd.sftp_argv(self.profile, host) if copy_batch else None,
                copy_batch, sshcmd.ssh_argv(self.profile, host, remote)))
        return planned

    def start_engines(self, argv, roles, logs_dir, env, on_started, existing=()):
        """Start one engine per role, the hosts at once; ``env`` stays here (the hosts get
        the profile's env_setup lines instead). Engines that started are recorded even when
        another host failed, so stopping the cluster reaches them; then the error is raised."""
        there = self._engine_argv_there(argv)
        failed = None
        for step, pids in _on_each(self._start_on, self.plan(argv, roles, logs_dir, existing)):
            if isinstance(pids, Exception):
                failed = failed or pids
                continue
            for pid, role, path in zip(pids, step.roles, step.logs):
                on_started(ProcessRecord(pid, there, time.time(), path, role, host=step.host))
            log.info("started %d engines on %s (pids %s)", len(pids), step.host,
                     " ".join(map(str, pids)))
        if failed is not None:
            raise failed

    def _start_on(self, step):
        """Run one HostStart; the pids of its engines."""
        count = len(step.roles)
        if step.copy:
            sshcmd.run(step.copy, step.host, "copying the engine connection file to "
                       f"{self._remote_path(paths.engine_file(self.profile_dir))}",
                       stdin_text=step.copy_batch)
        output = sshcmd.run(step.start, step.host, f"starting {count} engine(s)")
        pids = _words(output, "hpclaunch-pid")
        if len(pids) != count or not all(p.isdigit() for p in pids):
            raise sshcmd.SshError(f"starting engines on host {step.host} printed {len(pids)} "
                                  f"pids for {count} engines; its output was:\n{output}")
        return [int(p) for p in pids]

    def _engine_argv_there(self, argv):
        """The engine command with ``--file`` naming the copy of the engine file on the host."""
        argv = list(argv)
        if "--file" in argv:
            at = argv.index("--file") + 1
            argv[at] = self._remote_path(argv[at])
        return argv

    def _copy_batch(self):
        """sftp commands that put the engine connection file in this cluster's folder on a
        host (0600, in a 0700 folder); None when the hosts share this file system."""
        folder = self.remote_folder
        if folder is None:
            return None
        parts = folder.split("/")
        prefixes = ["/".join(parts[:k]) for k in range(1, len(parts) + 1) if parts[k - 1]]
        local = paths.engine_file(self.profile_dir)
        target = self._remote_path(local)
        batch = [f"-mkdir {_sftp_quote(p)}" for p in prefixes] + [
            f"chmod 700 {_sftp_quote(folder)}",
            f"put {_sftp_quote(local)} {_sftp_quote(target)}",
            f"chmod 600 {_sftp_quote(target)}"]
        return "\n".join(batch) + "\n"

    # -- polling -------------------------------------------------------------
    def running(self, records):
        alive = [r for r in records if r.host is None and super().is_running(r)]
        groups = _by_host(records)
        for host, alive_pids in _on_each(
                lambda h: self._alive_on(h, {r.pid for r in groups[h]}), groups):
            if isinstance(alive_pids, Exception):
                log.warning("cannot poll engines on %s (%s); counting them as running", host,
                            alive_pids)
                alive_pids = {r.pid for r in groups[host]}
            alive += [r for r in groups[host] if r.pid in alive_pids]
            self._fetch_logs(host, [r for r in groups[host] if r.pid not in alive_pids])
        return alive

    def is_running(self, record):
        if record.host is None:
            return super().is_running(record)
        return bool(self.running([record]))

    def exit_code(self, record):
        # A remote engine is not our child: its exit status stays on its host.
        return None if record.host else super().exit_code(record)

    def _alive_on(self, host, pids):
        """Pids of ``pids`` still running on ``host``; one ssh per host per POLL_TTL."""
        when, asked, alive = self._polls.get(host, (0.0, set(), set()))
        if time.monotonic() - when < POLL_TTL and pids <= asked:
            return alive & pids
        try:
            output = sshcmd.run(sshcmd.ssh_argv(self.profile, host,
                                                sshcmd.sh_c(POLL_SCRIPT, *sorted(pids))),
                                host, "polling engines")
        except sshcmd.SshError as e:
            log.warning("%s; counting its engines as running", e)
            return set(pids)
        alive = {int(p) for p in _words(output, "hpclaunch-alive") if p.isdigit()}
        self._polls[host] = (time.monotonic(), set(pids), alive)
        return alive

    def _fetch_logs(self, host, ended):
        """Copy the logs of engines that ended on ``host`` here (once), so start's error
        can quote them like a local engine's."""
        todo = [r for r in ended if r.log and self._folder_of(r)
                and (host, r.pid) not in self._fetched]
        if not todo:
            return
        self._fetched.update((host, r.pid) for r in todo)
        batch = [f"-get {_sftp_quote(self._folder_of(r) + '/' + os.path.basename(r.log))} "
                 f"{_sftp_quote(r.log)}" for r in todo]
        try:
            sshcmd.run(sshcmd.sftp_argv(self.profile, host), host, "fetching engine logs",
                       stdin_text="\n".join(batch) + "\n")
        except sshcmd.SshError as e:
            log.warning("%s", e)

    # -- stopping ------------------------------------------------------------
    def stop(self, records, grace=5.0):
        """End local records as LocalSystem does and each host's engines with one ssh;
        return what survived (psutil processes here, records on hosts)."""
        leftovers = super().stop([r for r in records if r.host is None], grace=grace)
        groups = _by_host(records)
        for host, survivors in _on_each(lambda h: self._stop_on(h, groups[h], grace), groups):
            if isinstance(survivors, Exception):
                log.error("%s; end those engines on %s by hand", survivors, host)
                survivors = {r.pid for r in groups[host]}
            leftovers += [r for r in groups[host] if r.pid in survivors]
            self._polls.pop(host, None)
        return leftovers

    def _stop_on(self, host, group, grace):
        """Run STOP_SCRIPT for ``group`` on ``host``; the pids that survived it."""
        folder = self._folder_of(group[0]) or ""
        remote = sshcmd.sh_c(STOP_SCRIPT, math.ceil(grace), folder, *sorted(r.pid for r in group))
        output = sshcmd.run(sshcmd.ssh_argv(self.profile, host, remote), host,
                            f"stopping engines {' '.join(str(r.pid) for r in group)}",
                            timeout=sshcmd.SSH_TIMEOUT + grace)
        return {int(p) for p in _words(output, "hpclaunch-survivor") if p.isdigit()}


def _on_each(func, items):
    """[(item, func(item) or the exception it raised)], in order, PARALLEL_HOSTS at a time."""
    items = list(items)
    if len(items) < 2:
        return [(item, _outcome(func, item)) for item in items]
    with concurrent.futures.ThreadPoolExecutor(min(PARALLEL_HOSTS, len(items))) as pool:
        return list(zip(items, pool.map(lambda item: _outcome(func, item), items)))


def _outcome(func, item):
    try:
        return func(item)
    except Exception as e:  # noqa: BLE001 - handed to the caller, which reports it per host
        return e


def _by_host(records):
    groups = {}
    for record in records:
        if record.host is not None:
            groups.setdefault(record.host, []).append(record)
    return groups


def _sftp_quote(path):
    """A path for an sftp batch line (double quotes keep spaces; sftp has no other quoting)."""
    if '"' in path or "\n" in path:
        raise ProfileError(f"cannot use {path!r} over sftp: it contains a quote or newline")
    return f'"{path}"'
