"""The ``ssh`` batch system and the ``ssh`` fan-out, with a real OpenSSH sshd as the hosts.

The project's sshd (scripts/sshd-setup.sh, generated keys) listens on 127.0.0.1 at a free
high port; "127.0.0.1" and "localhost" serve as two remote hosts, so engines really start
through ssh (as children of sshd sessions, not of hpclaunch) and psutil can check that
stop left none behind. Tests needing the sshd are marked ``ssh`` (and ``slurm`` for the
fan-out inside a real Slurm job); validation and rendering need neither and run always.
"""

import json
import os
import pathlib
import shutil
import stat
import subprocess
import sys
import time

import psutil
import pytest

from batch_helpers import ROOT, hpclaunch, job_ids, make_profile, squeue_active
from conftest import alive, processes_under, wait_until
from hpclaunch.launch import Profile, ProfileError, ProcessRecord, plan_jobs, state_file
from hpclaunch.launch.profile import parse_walltime
from hpclaunch.launch.ssh import plan_hosts
from sshd_helpers import free_port, private_sshd, throwaway_host_keys
from test_slurm import slurm  # noqa: F401 - the session fixture that starts the real Slurm


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A private sshd on 127.0.0.1:<free port>; ssh trusts its throwaway host key."""
    state = str(tmp_path_factory.mktemp("sshd"))
    with throwaway_host_keys(state), private_sshd(state, free_port()) as server:
        yield server


def ssh_profile(name, sshd, tmp_path, **fields):
    """A profile with system = 'ssh' on two "hosts" of the test sshd."""
    port = sshd["port"]
    settings = {"hosts": [f"root@127.0.0.1:{port}", f"root@localhost:{port}"],
                "ssh_key": sshd["key"], "remote_dir": str(tmp_path / "remote"),
                "env_setup": [f"export PYTHONPATH={ROOT}"], "python": sys.executable}
    settings.update(fields)
    return make_profile(name, "ssh", **settings)


def recorded_engines(pdir):
    with open(state_file(pdir)) as f:
        return json.load(f)["engines"]


def engine_processes_gone(pids):
    wait_until(lambda: not any(alive(p) for p in pids), 15,
               lambda: f"engines {[p for p in pids if alive(p)]} to end")


@pytest.mark.ssh
def test_start_map_status_stop_over_ssh(sshd, tmp_path):
    import hpclaunch as hl
    from remote_helpers import square

    name = "ssh-two-hosts"
    pdir = ssh_profile(name, sshd, tmp_path)
    started = hpclaunch("start", "--profile", name, "-n", "4", "--daemonize")
    assert started.returncode == 0, started.stdout + started.stderr
    assert "cluster of 4 engines is up" in started.stdout
    engines = recorded_engines(pdir)
    try:
        hosts = [e["host"] for e in engines]
        assert sorted(hosts) == sorted(2 * [f"root@127.0.0.1:{sshd['port']}",
                                            f"root@localhost:{sshd['port']}"])
        pids = [e["pid"] for e in engines]
        for pid in pids:  # started by sshd sessions and detached: not below this test
            assert os.getpid() not in [p.pid for p in psutil.Process(pid).parents()]
        folder = os.path.dirname(engines[0]["cmdline"][engines[0]["cmdline"].index("--file") + 1])
        assert folder.startswith(str(tmp_path / "remote"))
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(os.path.join(folder, "engine.json")).st_mode) == 0o600

        with hl.Client(profile=name, timeout=30) as rc:
            assert len(rc.ids) == 4
            assert rc[:].map_sync(square, range(20)) == [x * x for x in range(20)]
            assert sorted(rc[:].apply_sync(os.getpid)) == sorted(pids)
            tunables = rc[:].apply_sync(lambda: __import__("os").environ.get("GLIBC_TUNABLES"))
            assert tunables == ["glibc.malloc.hugetlb=1"] * 4, "sshd sessions start bare"

        status = hpclaunch("status", "--profile", name)
        assert status.returncode == 0, status.stderr
        assert status.stdout.count(f"root@127.0.0.1:{sshd['port']}") == 2
        assert status.stdout.count(f"root@localhost:{sshd['port']}") == 2
    finally:
        stopped = hpclaunch("stop", "--profile", name)
    assert stopped.returncode == 0, stopped.stderr
    assert "and 4 engines" in stopped.stdout
    engine_processes_gone(pids)
    assert not os.path.exists(folder), "stop removes the engine file (the key) from the hosts"
    assert processes_under(pdir) == [] and processes_under(folder) == []


@pytest.mark.ssh
def test_a_crashed_controllers_remote_engines_are_cleaned_up(sshd, tmp_path):
    """The controller dies without a word to its engines; reattaching (what stop and status
    do) must end them on their host with one ssh and remove the engine file there."""
    from hpclaunch.launch import ClusterLauncher, ClusterNotRunning

    name = "ssh-orphans"
    pdir = ssh_profile(name, sshd, tmp_path, hosts=[f"root@127.0.0.1:{sshd['port']}"])
    started = hpclaunch("start", "--profile", name, "-n", "2", "--daemonize")
    assert started.returncode == 0, started.stdout + started.stderr
    engines = recorded_engines(pdir)
    pids = [e["pid"] for e in engines]
    folder = os.path.dirname(engines[0]["cmdline"][engines[0]["cmdline"].index("--file") + 1])
    launcher = ClusterLauncher.attach(pdir)
    assert launcher.system.name == "ssh" and launcher.dead_engines() == []
    psutil.Process(launcher.state.controller.pid).kill()
    wait_until(lambda: not launcher.controller_running(), 10, lambda: "the controller to die")
    assert all(alive(p) for p in pids), "engines outlive their controller for a while"
    with pytest.raises(ClusterNotRunning, match="cleaned up stale state"):
        ClusterLauncher.attach(pdir)
    engine_processes_gone(pids)
    assert not os.path.exists(folder), "the stop script ran on the host"
    assert not os.path.exists(state_file(pdir))


@pytest.mark.ssh
def test_shared_filesystem_uses_the_profile_dir_on_the_host(sshd, tmp_path):
    """shared_filesystem = true: no copy; the host reads this engine file and writes its log
    into this profile's logs (the box shares its file system with itself)."""
    name = "ssh-shared"
    pdir = ssh_profile(name, sshd, tmp_path, hosts=[f"root@localhost:{sshd['port']}"],
                       shared_filesystem=True)
    started = hpclaunch("start", "--profile", name, "-n", "1", "--daemonize")
    assert started.returncode == 0, started.stdout + started.stderr
    [engine] = recorded_engines(pdir)
    try:
        assert engine["cmdline"][-1] == os.path.join(pdir, "security", "engine.json")
        assert engine["log"] == os.path.join(pdir, "logs", "engine-0.log")
        assert not os.path.exists(tmp_path / "remote"), "nothing is copied to the host"
        log = pathlib.Path(engine["log"])
        wait_until(lambda: "registered" in log.read_text().lower(), 15,
                   lambda: "the engine to log its registration")
    finally:
        stopped = hpclaunch("stop", "--profile", name)
    assert stopped.returncode == 0, stopped.stderr
    engine_processes_gone([engine["pid"]])
    assert os.path.exists(os.path.join(pdir, "logs", "engine-0.log")), "stop keeps local logs"


@pytest.mark.ssh
def test_unreachable_host_quotes_ssh_and_names_the_host(sshd, tmp_path):
    closed = free_port()
    name = "ssh-unreachable"
    pdir = ssh_profile(name, sshd, tmp_path, hosts=[f"root@127.0.0.1:{sshd['port']}",
                                                    f"root@127.0.0.1:{closed}"])
    result = hpclaunch("start", "--profile", name, "-n", "4", "--daemonize")
    assert result.returncode == 1
    assert f"to host root@127.0.0.1:{closed} could not connect" in result.stderr
    assert f"port {closed}: Connection refused" in result.stderr, "ssh's own words"
    assert not os.path.exists(state_file(pdir))
    wait_until(lambda: processes_under(str(tmp_path / "remote")) == [], 15,
               lambda: "the engines started on the reachable host to be stopped")
    assert processes_under(pdir) == []


@pytest.mark.ssh
def test_engine_dying_on_a_host_quotes_its_log(sshd, tmp_path):
    name = "ssh-no-python"
    pdir = ssh_profile(name, sshd, tmp_path, python="/nonexistent/python3")
    result = hpclaunch("start", "--profile", name, "-n", "2", "--daemonize")
    assert result.returncode == 1
    assert "only 0 of 2 engines registered: 2 exited" in result.stderr
    assert f"on root@127.0.0.1:{sshd['port']}, exited" in result.stderr
    assert "/nonexistent/python3: No such file or directory" in result.stderr
    assert processes_under(pdir) == []


@pytest.mark.slurm
@pytest.mark.ssh
def test_ssh_fanout_inside_a_real_slurm_job(slurm, sshd):  # noqa: F811 - fixture
    """Slurm allocates the node (this box, named by `hostname`, which resolves to 127.0.0.1
    where the sshd listens); the job script ssh'es to it and starts the engines there."""
    import hpclaunch as hl

    name = "slurm-ssh-fanout"
    pdir = make_profile(name, "slurm", fanout="ssh", ssh_key=sshd["key"],
                        ssh_options=[f"Port={sshd['port']}"],
                        env_setup=[f"export PYTHONPATH={ROOT}"], python=sys.executable)
    started = hpclaunch("start", "--profile", name, "-n", "4", "--daemonize")
    assert started.returncode == 0, started.stdout + started.stderr
    ids = job_ids(pdir)
    try:
        with hl.Client(profile=name, timeout=30) as rc:
            assert rc[:].map_sync(lambda x: x + 1, range(8)) == list(range(1, 9))
            pids = rc[:].apply_sync(os.getpid)
            jobs = rc[:].apply_sync(lambda: __import__("os").environ.get("SLURM_JOB_ID"))
        assert jobs == [None] * 4, "engines run in ssh sessions, outside the job's environment"
        for pid in pids:
            names = [p.name() for p in psutil.Process(pid).parents()]
            assert "sshd" in names and "slurmstepd" not in names, names
    finally:
        stopped = hpclaunch("stop", "--profile", name)
    assert stopped.returncode == 0, stopped.stderr
    assert squeue_active(ids) == []
    engine_processes_gone(pids)


# -- no sshd needed ------------------------------------------------------------------------
def test_plan_hosts_spreads_or_fills():
    hosts = ["a", "b", "c"]
    assert plan_hosts(hosts, 7) == [("a", 3), ("b", 2), ("c", 2)]
    assert plan_hosts(hosts, 5, per_host=2) == [("a", 2), ("b", 2), ("c", 1)]
    running = [ProcessRecord(1, [], 0, None, "engine-0", host="a")]
    assert plan_hosts(hosts, 2, existing=running) == [("b", 1), ("c", 1)]
    with pytest.raises(ProfileError, match="do not fit on 3 host"):
        plan_hosts(hosts, 7, per_host=2)
    with pytest.raises(ProfileError, match="needs the hosts"):
        plan_hosts([], 1)


@pytest.mark.parametrize("fields, words", [
    ({"hosts": "node1"}, "hosts must be a list of strings"),
    ({"hosts": ["me@node 2"]}, "'me@node 2' is not a host"),
    ({"hosts": ["me@node2:ssh"]}, "'me@node2:ssh' is not a host"),
    ({"ssh_options": ["-p 2222"]}, "'-p 2222' is not an ssh -o option"),
    ({"ssh_key": ""}, "ssh_key = '' must be the path"),
    ({"shared_filesystem": "yes"}, "shared_filesystem = 'yes' must be true"),
    ({"remote_dir": " "}, "remote_dir = ' ' must be a folder"),
    ({"fanout": "shh"}, "did you mean 'ssh'"),
])
def test_bad_ssh_fields_are_named(fields, words):
    with pytest.raises(ProfileError) as info:
        Profile(system="ssh", **fields)
    assert words in str(info.value)


def test_ssh_profile_without_hosts_fails_at_start_not_at_create():
    name = "ssh-no-hosts"
    assert make_profile(name, "ssh")
    result = hpclaunch("start", "--profile", name, "-n", "2", "--daemonize", "--timeout", "20")
    assert result.returncode == 1
    assert "system = 'ssh' needs the hosts" in result.stderr


@pytest.mark.parametrize("system, nodes", [
    ("slurm", 'scontrol show hostnames "$SLURM_JOB_NODELIST"'),
    ("pbs", "\"$PBS_NODEFILE\""), ("torque", "\"$PBS_NODEFILE\""),
    ("sge", "\"$PE_HOSTFILE\""), ("lsf", "LSB_MCPU_HOSTS"),
])
def test_render_shows_the_ssh_fanout(system, nodes, tmp_path, monkeypatch):
    monkeypatch.delenv("HPCLAUNCH_SSH_CONFIG", raising=False)  # no -F: exact words below
    profile = Profile(system=system, fanout="ssh", ssh_key="/keys/id", engines_per_node=2,
                      ssh_options=["Port=2222"], env_setup=["module load python"],
                      parallel_environment="smp" if system == "sge" else None)
    [job] = plan_jobs(profile, 5, str(tmp_path), ["python3", "-m", "hpclaunch.engine",
                                                  "--file", "/p/engine.json"])
    text = job.text
    assert nodes in text
    assert ("ssh -o BatchMode=yes -o ConnectTimeout=20 -i /keys/id -o IdentitiesOnly=yes "
            "-o Port=2222 -tt \"$hpclaunch_node\"") in text
    assert ('python3 -m hpclaunch.engine --file /p/engine.json --drain-at "$HPCLAUNCH_DRAIN_AT" &'
            in text)
    assert text.count("module load python") == 2, "env_setup runs in the job and on each node"
    assert "engines_per_node = 2" in text and "${#hpclaunch_nodes[@]}" in text
    if shutil.which("bash"):
        syntax = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
        assert syntax.returncode == 0, syntax.stderr


def test_ssh_fanout_script_starts_engines_per_node(tmp_path):
    """Run the rendered fan-out with `ssh` and `scontrol` replaced by tiny scripts that log
    their arguments (and run the remote command locally in a bare environment, as sshd
    would), to check the node split, the remote quoting and that the job's drain time and
    the huge-pages setting reach the engines on the nodes, without a cluster."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text("#!/bin/sh\nprintf 'n1\\nn2\\nn3\\n'\n")
    (bin_dir / "ssh").write_text(
        "#!/bin/bash\n"
        "for last; do :; done\n"                      # the remote command is the last word
        "node=${@: -2:1}\n"
        f"echo \"$node\" >> {tmp_path}/nodes\n"
        "exec env -i PATH=\"$PATH\" sh -c \"$last\"\n")
    for tool in ("scontrol", "ssh"):
        os.chmod(bin_dir / tool, 0o755)
    profile = Profile(system="slurm", fanout="ssh", env_setup=["echo \"it's set up\""])
    argv = ["sh", "-c", f'echo "engine $GLIBC_TUNABLES $*" >> {tmp_path}/engines', "engine"]
    [job] = plan_jobs(profile, 5, str(tmp_path), argv)
    began = time.time()
    script = tmp_path / "job.sh"
    script.write_text(job.text)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", SLURM_JOB_ID="1",
               SLURM_JOB_NODELIST="n[1-3]")
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted((tmp_path / "nodes").read_text().split()) == ["n1", "n2", "n3"]
    engines = (tmp_path / "engines").read_text().splitlines()
    assert len(engines) == 5
    drain_at = began + parse_walltime(profile.walltime) - profile.drain_margin_seconds()
    for line in engines:
        tunables, flag, value = line.split()[1:]
        assert flag == "--drain-at" and abs(int(value) - drain_at) < 30, line
        assert tunables == "glibc.malloc.hugetlb=1", "the nodes' bare shells get huge pages"
    assert "2 engine(s) on n1" in done.stdout and "1 engine(s) on n3" in done.stdout
    assert done.stdout.count("it's set up") == 4, "once in the job, once per node"


def test_ssh_profile_round_trips_through_toml(tmp_path):
    profile = Profile(system="ssh", hosts=["node1", "me@node2:2222"], ssh_key="~/.ssh/id",
                      ssh_options=["Port=2222"], shared_filesystem=True)
    path = str(tmp_path / "profile.toml")
    profile.save(path)
    assert Profile.load(path) == profile


def test_render_of_an_ssh_profile_shows_each_hosts_commands():
    name = "ssh-render"
    make_profile(name, "ssh", hosts=["node1", "me@node2:2222"], ssh_key="/keys/id",
                 engines_per_node=2, env_setup=["module load python"])
    result = hpclaunch("render", "--profile", name, "-n", "3")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "# ---- host node1 (2 engines)" in out and "# ---- host me@node2:2222 (1 engine)" in out
    assert "sftp -b - -o BatchMode=yes" in out and "-P 2222 me@node2 <<'SFTP'" in out
    assert out.count("chmod 600") == 2 and "-p 2222 me@node2 'sh -c" in out
    assert "module load python" in out and "engine-2.log'" in out


def test_stop_removes_only_the_folders_start_made(tmp_path):
    """The folder to remove on a host comes from the engine's recorded command line; one that
    start did not make (shared file system, or a state file naming something else) stays."""
    from hpclaunch.launch import SshSystem

    system = SshSystem(Profile(system="ssh", hosts=["h"]), str(tmp_path / "profile_x"))

    def engine(path):
        return ProcessRecord(1, ["python3", "--file", path], 0, None, "engine-0", host="h")

    assert system._folder_of(engine(".hpclaunch/ssh/profile_x-1a2b/engine.json")) == \
        ".hpclaunch/ssh/profile_x-1a2b"
    for path in ("/etc/engine.json", str(tmp_path / "profile_x" / "security" / "engine.json")):
        assert system._folder_of(engine(path)) is None
