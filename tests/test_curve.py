"""CurveZMQ: on by default beyond loopback, on when asked, and only this cluster's
connection file gets in. (Everything stays on loopback: a wildcard bind is reached
through 127.0.0.1.)"""

import json

import pytest
import zmq

import hpclaunch as hl
from hpclaunch import error
from hpclaunch.protocol import paths, read_connection_file


def connection(cluster):
    return read_connection_file(paths.client_file(cluster.profile_dir))


def copy_connection_file(tmp_path, info, **changes):
    data = dict(info, key=info["key"].decode(), **changes)
    path = tmp_path / "client.json"
    path.write_text(json.dumps(data))
    path.chmod(0o600)
    return str(path)


def test_loopback_is_not_encrypted_by_default(rc):
    assert read_connection_file(rc.connection_file).get("curve") is None


def test_beyond_loopback_encrypts_by_default(start_cluster):
    cluster, rc = start_cluster(n=1, controller_ip="0.0.0.0",
                                controller_args=["--location", "127.0.0.1"])
    curve = connection(cluster)["curve"]
    assert set(curve) == {"server_public", "client_public", "client_secret"}
    assert rc[:].apply_sync(lambda: 6 * 7) == [42]


def test_keys_from_elsewhere_cannot_connect(start_cluster, tmp_path):
    cluster, rc = start_cluster(n=1, controller_args=["--curve"])
    info = connection(cluster)
    assert rc[:].apply_sync(lambda: "encrypted") == ["encrypted"]

    no_keys = copy_connection_file(tmp_path, info, curve=None)
    with pytest.raises(error.TimeoutError, match="no controller answered"):
        hl.Client(url_file=no_keys, timeout=3)

    public, secret = zmq.curve_keypair()
    stranger = dict(info["curve"], client_public=public.decode(), client_secret=secret.decode())
    wrong_keys = copy_connection_file(tmp_path, info, curve=stranger)
    with pytest.raises(error.TimeoutError, match="CurveZMQ"):
        hl.Client(url_file=wrong_keys, timeout=3)

    assert rc[:].apply_sync(lambda: "still serving") == ["still serving"]
