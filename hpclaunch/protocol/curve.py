"""CurveZMQ encryption for a controller that listens beyond loopback.

The controller makes a server keypair and one client keypair per cluster at start.
Connection files carry the server's public key and the client keypair (they are
0600 already, beside the HMAC key); the controller admits only that client key, so
a peer without the connection file can neither read the wire nor connect.
"""

import ipaddress

import zmq


def listens_beyond_loopback(ip):
    """True unless ``ip`` is a loopback address or name."""
    if ip in ("localhost",):
        return False
    try:
        return not ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return True  # '*', a host name or an interface: assume the network can reach it


def new_curve_keys():
    """(server secret key, the connection files' ``curve`` entry)."""
    server_public, server_secret = zmq.curve_keypair()
    client_public, client_secret = zmq.curve_keypair()
    return server_secret, {"server_public": server_public.decode("ascii"),
                           "client_public": client_public.decode("ascii"),
                           "client_secret": client_secret.decode("ascii")}


def make_curve_client(sock, curve):
    """Configure a not-yet-connected socket from a connection file's ``curve`` entry."""
    if not curve:
        return sock
    sock.curve_serverkey = curve["server_public"].encode("ascii")
    sock.curve_publickey = curve["client_public"].encode("ascii")
    sock.curve_secretkey = curve["client_secret"].encode("ascii")
    return sock
