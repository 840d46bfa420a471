"""``hpclaunch controller``: bind the one port, write connection files, serve.

argparse rather than click: the launcher starts this module directly and
start-up time counts toward "8 engines up in 2 s".
"""

import argparse
import logging
import os
import signal
import socket
import sys
import time

import zmq

from ..protocol import (SIGNATURE_SCHEME, Session, listens_beyond_loopback, new_curve_keys,
                        new_key, paths, write_connection_file)
from .heartbeat import HeartMonitor
from .hub import Hub
from .schemes import SCHEMES
from .sqlitedb import SQLiteDB
from .taskdb import MemoryDB

log = logging.getLogger("hpclaunch.controller")


class _Stop(BaseException):
    """Raised by the signal handler to leave a blocking poll at once."""


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="hpclaunch controller",
                                description="Run an hpclaunch controller (hub + schedulers).")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--profile", help="profile name (default: 'default')")
    where.add_argument("--profile-dir", help="profile directory (overrides --profile)")
    p.add_argument("--ip", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; '*' or 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    enc = p.add_mutually_exclusive_group()
    enc.add_argument("--curve", dest="curve", action="store_true", default=None,
                     help="encrypt with CurveZMQ (default: on when --ip is beyond loopback)")
    enc.add_argument("--no-curve", dest="curve", action="store_false",
                     help="do not encrypt, even beyond loopback (a warning is logged)")
    p.add_argument("--location", help="host name or address that engines and clients should "
                                      "connect to when --ip is not a single address")
    p.add_argument("--hb-period", type=float, default=2.0,
                   help="seconds between heartbeats (default 2)")
    p.add_argument("--hb-liveness", type=int, default=3,
                   help="missed heartbeats before an engine is declared dead (default 3)")
    p.add_argument("--scheme", default="leastload", choices=sorted(SCHEMES),
                   help="how load-balanced tasks pick an engine (default leastload)")
    p.add_argument("--hwm", type=int, default=0,
                   help="max outstanding load-balanced tasks per engine; more wait in the "
                        "scheduler so a newly free engine gets them (default 0: no limit)")
    p.add_argument("--db", choices=("memory", "sqlite"), default="memory",
                   help="where task records live: memory (bounded, default) or sqlite "
                        "(<profile dir>/tasks.db, started afresh, kept after the controller exits)")
    p.add_argument("--max-records", type=int, default=10_000,
                   help="task records kept in memory before the oldest completed are culled "
                        "(default 10000; --db sqlite keeps every record on disk)")
    p.add_argument("--max-bytes", type=int, default=1 << 30,
                   help="bytes of stored requests/results before culling (default 1 GiB)")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    args = p.parse_args(argv)
    if args.hb_period <= 0 or args.hb_liveness < 1:
        p.error("--hb-period must be > 0 and --hb-liveness >= 1")
    if args.hwm < 0:
        p.error("--hwm must be >= 0 (0: no limit)")
    if not 0 <= args.port <= 65535:
        p.error(f"--port {args.port} is not a TCP port")
    return args


def connection_info(url, key, location, curve=None):
    return {"url": url, "key": key, "signature_scheme": SIGNATURE_SCHEME, "location": location,
            "ssh": None, "curve": curve, "controller_pid": os.getpid(), "created": time.time()}


class _AllowOne:
    """ZAP credentials check: only the cluster's own client key may connect."""

    def __init__(self, public_key):
        self.public_key = public_key.encode("ascii")

    def callback(self, domain, key):   # pyzmq passes the client key z85-encoded
        return key == self.public_key


def encryption(args, ctx, sock):
    """Make ``sock`` a CurveZMQ server when asked or when listening beyond loopback.

    Returns (the connection files' ``curve`` entry or None, the ZAP authenticator)."""
    beyond = listens_beyond_loopback(args.ip)
    use = args.curve if args.curve is not None else beyond
    if not use:
        if beyond:
            log.warning("listening on %s beyond loopback WITHOUT encryption (--no-curve): "
                        "anyone on the network can read the traffic (it is still signed)", args.ip)
        return None, None
    from zmq.auth.thread import ThreadAuthenticator

    server_secret, curve = new_curve_keys()
    authenticator = ThreadAuthenticator(ctx, log=logging.getLogger("hpclaunch.controller.zap"))
    authenticator.start()
    authenticator.configure_curve_callback("*", credentials_provider=_AllowOne(curve["client_public"]))
    sock.curve_server = True
    sock.curve_secretkey = server_secret
    log.info("CurveZMQ encryption on; only peers holding this cluster's connection file may connect")
    return curve, authenticator


def bind(sock, ip, port):
    """Bind the ROUTER; returns the URL peers should connect to."""
    bind_ip = "*" if ip in ("0.0.0.0", "*") else ip
    try:
        if port:
            sock.bind(f"tcp://{bind_ip}:{port}")
        else:
            port = sock.bind_to_random_port(f"tcp://{bind_ip}")
    except zmq.ZMQError as e:
        raise SystemExit(f"hpclaunch controller: cannot listen on {ip}:{port or '<any>'}: {e}")
    return port


def open_db(args, pdir):
    if args.db == "memory":
        return MemoryDB(args.max_records, args.max_bytes)
    path = os.path.join(pdir, "tasks.db")
    for stale in (path, path + "-wal", path + "-shm"):
        if os.path.exists(stale):
            os.unlink(stale)
    log.info("task records in %s", path)
    return SQLiteDB(path)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s controller: %(message)s")
    pdir = paths.profile_dir(args.profile, args.profile_dir)
    os.makedirs(paths.logs_dir(pdir), exist_ok=True)

    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    for opt, value in ((zmq.SNDHWM, 0), (zmq.RCVHWM, 0), (zmq.ROUTER_HANDOVER, 1), (zmq.LINGER, 1000)):
        sock.setsockopt(opt, value)
    curve, authenticator = encryption(args, ctx, sock)
    port = bind(sock, args.ip, args.port)
    wildcard = args.ip in ("0.0.0.0", "*")
    location = args.location or (socket.gethostname() if wildcard else args.ip)
    url = f"tcp://{location}:{port}"

    key = new_key()
    session = Session(key, username="controller")
    info = connection_info(url, key, socket.gethostname(), curve)
    write_connection_file(paths.engine_file(pdir), info)
    write_connection_file(paths.client_file(pdir), info)

    hub = Hub(sock, session, HeartMonitor(args.hb_period, args.hb_liveness),
              open_db(args, pdir), args.scheme, args.hwm)

    def on_signal(signum, _frame):
        log.info("received signal %d: shutting down engines and controller", signum)
        raise _Stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("listening at %s (profile dir %s, pid %d)", url, pdir, os.getpid())
    try:
        hub.serve()
    except _Stop:
        pass
    finally:
        hub.shutdown(engines=True)
        hub.db.close()
        sock.close(linger=1000)
        if authenticator is not None:
            authenticator.stop()
        ctx.term()
        log.info("controller stopped")
    return 0
