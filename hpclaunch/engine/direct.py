"""The engine's end of the direct lane (see protocol/direct.py): a ROUTER that clients
send DirectView work to, bound where the controller can be reached from.

It listens on loopback when the controller does (a local cluster), else on the address
this host uses to reach the controller, the one other nodes can reach it at. It is
encrypted with CurveZMQ, under a keypair of its own, whenever the cluster's connection
file is: the engine announces its public key at registration next to the URL.
"""

import ipaddress
import socket

import zmq

from ..protocol import listens_beyond_loopback
from ..protocol.direct import direct_identity, url_host


def address_towards(host):
    """The local IP address this host would use to reach ``host`` (no packet is sent)."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((host, 9))
            return probe.getsockname()[0]
    except OSError:
        return socket.gethostbyname(socket.gethostname())


def bind_direct_port(context, controller_url, curve, engine_uuid):
    """A bound ROUTER and what the engine announces of it: ``{"url", "curve_public"}``."""
    host = url_host(controller_url)
    ip = "127.0.0.1" if not listens_beyond_loopback(host) else address_towards(host)
    sock = context.socket(zmq.ROUTER)
    for opt, value in ((zmq.SNDHWM, 0), (zmq.RCVHWM, 0), (zmq.LINGER, 1000),
                       (zmq.ROUTING_ID, direct_identity(engine_uuid))):
        sock.setsockopt(opt, value)
    public = None
    if curve:
        public, secret = zmq.curve_keypair()
        sock.curve_server = True
        sock.curve_secretkey = secret
        public = public.decode("ascii")
    bind_ip = ip
    if ipaddress.ip_address(ip).version == 6:
        bind_ip = f"[{ip}]"
        sock.setsockopt(zmq.IPV6, 1)
    port = sock.bind_to_random_port(f"tcp://{bind_ip}")
    return sock, {"url": f"tcp://{bind_ip}:{port}", "curve_public": public}
