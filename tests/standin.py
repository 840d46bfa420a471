"""A stand-in engine and client: raw DEALERs that speak the protocol to a real controller,
for tests that must send what a real engine or client never would (or not in that order)."""

import contextlib

import zmq

from hpclaunch.protocol import Session, paths, read_connection_file


@contextlib.contextmanager
def stand_in(cluster, books=None):
    """Yields ``(engine, client, as_engine, as_client, engine_id)``: two connected sockets,
    the engine one registered as host ``nowhere`` pid 1, and a Session for each.
    ``books``: the routing id the engine announces for its ledger (engine/ledger.py)."""
    conn = read_connection_file(paths.client_file(cluster.profile_dir))
    ctx = zmq.Context.instance()
    engine, client = (ctx.socket(zmq.DEALER) for _ in range(2))
    try:
        for sock in (engine, client):
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVTIMEO, 5000)
            sock.connect(conn["url"])
        as_engine, as_client = Session(conn["key"]), Session(conn["key"])
        as_engine.send(engine, "registration_request", {
            "uuid": "stand-in", "heart": "stand-in-heart", "iopub": "stand-in-iopub",
            "hostname": "nowhere", "pid": 1, **({"books": books} if books else {})})
        engine_id = as_engine.unpack(engine.recv_multipart()).content["id"]
        yield engine, client, as_engine, as_client, engine_id
    finally:
        engine.close()
        client.close()
