"""SSH tunnels from a "laptop" to a controller on a "cluster", with real OpenSSH and paramiko.

scripts/netns.sh builds a network namespace (the cluster) with an sshd on its veth address
(the login node) and a cluster-only address 10.78.0.1 that this side cannot route to. The
controller and two engines run inside it on 10.78.0.1 (Curve on: beyond loopback); the tests
connect from outside through one tunnel per client, with each backend. Needs root and
iproute2; without them the namespace tests skip with the reason.
"""

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time

import psutil
import pytest

import hpclaunch as hl
from hpclaunch import error
from hpclaunch.tunnel import TunnelError, parse_sshserver, split_tcp_url
from conftest import wait_until
from sshd_helpers import ssh_processes_of, throwaway_host_keys

pytestmark = pytest.mark.ssh

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NETNS = os.path.join(ROOT, "scripts", "netns.sh")
CLUSTER_IP = "10.78.0.1"
BACKENDS = {"openssh": False, "paramiko": True}


def namespaces_unavailable():
    """Why the namespace tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not shutil.which("ip"):
        return "no iproute2 (the ip command)"
    if not shutil.which("ssh") or not shutil.which("scp"):
        return "no OpenSSH client (ssh, scp)"
    if not os.path.exists("/usr/sbin/sshd") and not shutil.which("apt-get"):
        return "no /usr/sbin/sshd and no apt-get to install openssh-server"
    if subprocess.run(["ip", "netns", "list"], capture_output=True).returncode != 0:
        return "ip netns does not work here"
    return None


def paramiko_threads():
    return [t.name for t in threading.enumerate() if t.name.startswith("hpclaunch-paramiko-")]


@pytest.fixture(scope="module")
def login_node(tmp_path_factory):
    """The namespace with its sshd: {ns, server, key, login_ip, sshd_pid}; both backends
    read the test's ssh config (throwaway host key: no known_hosts)."""
    reason = namespaces_unavailable()
    if reason:
        pytest.skip(reason)
    state = str(tmp_path_factory.mktemp("netns"))
    with throwaway_host_keys(state):
        try:
            up = subprocess.run(["bash", NETNS, "up", f"hlssh-{os.getpid()}", state, "22022"],
                                capture_output=True, text=True, timeout=400)
            assert up.returncode == 0, f"netns.sh up failed:\n{up.stdout}\n{up.stderr}"
            with open(os.path.join(state, "netns.env")) as f:
                env = dict(line.split("=", 1) for line in f.read().split())
            with open(os.path.join(state, "sshd", "sshd.pid")) as f:
                sshd_pid = int(f.read())
            yield {"ns": env["NS"], "server": f"root@{env['LOGIN_IP']}:{env['SSH_PORT']}",
                   "key": env["SSH_KEY"], "login_ip": env["LOGIN_IP"], "sshd_pid": sshd_pid}
        finally:
            subprocess.run(["bash", NETNS, "down", state], timeout=60)


@pytest.fixture(scope="module")
def remote_cluster(login_node):
    """A controller on 10.78.0.1 and two engines, all inside the namespace."""
    pdir = os.path.join(os.environ["HPCLAUNCH_DIR"], f"profile_sshcluster-{os.getpid()}")
    client_file = os.path.join(pdir, "security", "client.json")
    in_ns = ["ip", "netns", "exec", login_node["ns"], sys.executable]
    procs = [subprocess.Popen(in_ns + ["-m", "hpclaunch.controller", "--ip", CLUSTER_IP,
                                       "--profile-dir", pdir, "--hb-period", "0.5",
                                       "--log-level", "WARNING"])]
    try:
        wait_until(lambda: os.path.exists(os.path.join(pdir, "security", "engine.json")), 30,
                   lambda: "the controller's connection files")
        for _ in range(2):
            procs.append(subprocess.Popen(in_ns + ["-m", "hpclaunch.engine", "--profile-dir",
                                                   pdir, "--log-level", "WARNING"]))
        with open(client_file) as f:
            info = json.load(f)
        assert info["curve"], "beyond loopback the controller must encrypt by default"
        yield dict(login_node, pdir=pdir, client_file=client_file, url=info["url"])
    finally:
        procs[0].send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def tunnel_client(remote, backend, **kwargs):
    rc = hl.Client(url_file=remote["client_file"], sshserver=remote["server"],
                   sshkey=remote["key"], paramiko=BACKENDS[backend], timeout=20, **kwargs)
    rc.wait_for_engines(2, timeout=30)
    return rc


# -- without a namespace ------------------------------------------------------------------
def test_sshserver_parsing():
    server = parse_sshserver("me@login.example.org:2222")
    assert (server.user, server.host, server.port) == ("me", "login.example.org", 2222)
    assert str(parse_sshserver("login")) == "login" and parse_sshserver("login").port is None
    for bad in ("", "me@login:notaport", "me@login:70000", "a b"):
        with pytest.raises(TunnelError):
            parse_sshserver(bad)
    assert split_tcp_url("tcp://10.78.0.1:5555") == ("10.78.0.1", 5555)
    assert split_tcp_url("tcp://*:5555") == ("127.0.0.1", 5555)
    with pytest.raises(TunnelError, match="tcp://HOST:PORT"):
        split_tcp_url("ipc:///tmp/x")


def test_engine_and_tunnel_imports_stay_light():
    code = ("import sys, hpclaunch.engine.app, hpclaunch.tunnel, hpclaunch.tunnel.openssh; "
            "assert 'paramiko' not in sys.modules, 'paramiko imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_unreachable_ssh_server_is_a_clear_error(tmp_path):
    """A refused SSH port names the server and the backend, for both backends."""
    from hpclaunch.tunnel import open_tunnel

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for backend, use_paramiko in BACKENDS.items():
        with pytest.raises(TunnelError) as info:
            open_tunnel("tcp://127.0.0.1:1", f"nobody@127.0.0.1:{port}", paramiko=use_paramiko,
                        timeout=10)
        assert f"127.0.0.1:{port}" in str(info.value) and backend in str(info.value)
    assert not ssh_processes_of(os.getpid())


# -- through the namespace ----------------------------------------------------------------
def test_direct_connection_fails(remote_cluster):
    host, port = split_tcp_url(remote_cluster["url"])
    assert host == CLUSTER_IP
    route = subprocess.run(["ip", "route", "get", CLUSTER_IP], capture_output=True, text=True)
    assert route.returncode != 0, f"{CLUSTER_IP} must be unroutable from here: {route.stdout}"
    with pytest.raises(OSError):
        socket.create_connection((host, port), timeout=3).close()
    t0 = time.monotonic()
    with pytest.raises(error.TimeoutError, match="sshserver="):
        hl.Client(url_file=remote_cluster["client_file"], timeout=3)
    assert time.monotonic() - t0 < 10


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_client_through_tunnel(remote_cluster, backend):
    rc = tunnel_client(remote_cluster, backend)
    try:
        assert rc._tunnel.backend == backend and rc.url.startswith("tcp://127.0.0.1:")
        assert rc[:].map_sync(lambda x: x * x, range(10)) == [x * x for x in range(10)]
        blob = os.urandom(100 * 1024 * 1024)
        rc[rc.ids[0]].push({"blob": blob}, block=True)
        back = rc[rc.ids[0]].pull("blob", block=True)
        assert back == blob
        del back, blob
        rc[rc.ids[0]].execute("del blob", block=True)
    finally:
        rc.close()
    assert not ssh_processes_of(os.getpid()), "closing the client must end its ssh process"
    wait_until(lambda: not paramiko_threads(), 5,
               lambda: f"the paramiko tunnel threads to end: {paramiko_threads()}")


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_dropped_tunnel_is_a_clear_error_and_results_survive(remote_cluster, backend):
    from remote_helpers import sleep_then

    rc = tunnel_client(remote_cluster, backend)
    try:
        ar = rc[rc.ids[0]].apply_async(sleep_then, 2, 42)
        time.sleep(0.3)
        # the login node drops every session (the listening sshd stays up)
        for child in psutil.Process(remote_cluster["sshd_pid"]).children():
            child.kill()
        with pytest.raises(TunnelError) as info:
            ar.get(timeout=30)
        message = str(info.value)
        assert remote_cluster["server"] in message and backend in message
        assert "get_result" in message
        with pytest.raises(TunnelError):
            rc[:].apply_async(os.getpid)
    finally:
        rc.close()
    assert not ssh_processes_of(os.getpid())
    with tunnel_client(remote_cluster, backend) as rc2:
        assert rc2.get_result(ar.msg_ids[0]).get(timeout=30) == 42


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_connect_fetches_profile_then_client_tunnels(remote_cluster, backend):
    user_host, port = remote_cluster["server"].rsplit(":", 1)
    profile = f"laptop-{backend}-{os.getpid()}"
    cmd = [sys.executable, "-c", "from hpclaunch.cli.connect import connect; "
           "connect(prog_name='hpclaunch connect')", user_host, "--port", port,
           "--key", remote_cluster["key"], "--profile", profile,
           "--remote-profile-dir", remote_cluster["pdir"], "--backend", backend]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    pdir = os.path.join(os.environ["HPCLAUNCH_DIR"], f"profile_{profile}")
    path = os.path.join(pdir, "security", "client.json")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    with open(path) as f:
        stored = json.load(f)
    with open(remote_cluster["client_file"]) as f:
        original = json.load(f)
    assert stored["ssh"] == remote_cluster["server"]
    assert stored["key"] == original["key"] and stored["url"] == original["url"]
    with hl.Client(profile=profile, paramiko=BACKENDS[backend], timeout=20) as rc:
        assert rc._tunnel is not None and rc._tunnel.backend == backend
        rc.wait_for_engines(2, timeout=30)
        assert rc[:].apply_sync(lambda: 7) == [7, 7]
    assert not ssh_processes_of(os.getpid())


def test_connect_reports_a_missing_remote_profile(remote_cluster):
    user_host, port = remote_cluster["server"].rsplit(":", 1)
    done = subprocess.run(
        [sys.executable, "-c", "from hpclaunch.cli.connect import connect; connect()",
         user_host, "--port", port, "--key", remote_cluster["key"], "--profile", "nothere",
         "--remote-profile-dir", "/nonexistent/profile"],
        capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "/nonexistent/profile/security/client.json" in done.stderr


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_engine_through_ssh(remote_cluster, backend, tmp_path):
    """An engine outside the cluster network registers through --engine-ssh; the key is
    never in its log, and stopping it leaves no ssh process."""
    engine_file = os.path.join(remote_cluster["pdir"], "security", "engine.json")
    log_path = tmp_path / "engine.log"
    with open(log_path, "w") as log:
        engine = subprocess.Popen(
            [sys.executable, "-m", "hpclaunch.engine", "--file", engine_file, "--log-level",
             "DEBUG", "--engine-ssh", remote_cluster["server"], "--engine-ssh-key",
             remote_cluster["key"], "--engine-ssh-backend", backend], stderr=log)
    try:
        with tunnel_client(remote_cluster, "openssh") as rc:
            def outside():
                return [e for e, info in rc.engines.items() if info["pid"] == engine.pid]

            wait_until(outside, 30, lambda: f"engine pid {engine.pid} to register through "
                                            f"SSH; its log:\n{log_path.read_text()}")
            assert rc[outside()[0]].apply_sync(os.getpid) == engine.pid
            tunnel_pids = [p.pid for p in ssh_processes_of(engine.pid)]
            assert bool(tunnel_pids) == (backend == "openssh")
    finally:
        engine.send_signal(signal.SIGTERM)
        engine.wait(20)
    for pid in tunnel_pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    with open(engine_file) as f:
        key = json.load(f)["key"]
    with open(remote_cluster["key"]) as f:
        ssh_key_body = f.read().splitlines()[1]
    text = log_path.read_text()
    assert key not in text and ssh_key_body not in text
