"""Connection files: where the controller listens and the key to talk to it.

Written atomically (temp file + rename) with mode 0600 inside a 0700 directory,
so no other user can read the key, and no reader ever sees half a file.
"""

import json
import os
import stat
import tempfile

from ..error import ConnectionFileError

REQUIRED = ("url", "key", "signature_scheme")


def ensure_private_dir(path):
    """Create ``path`` (and parents) and force it to 0700."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def write_connection_file(path, info):
    """Atomically write ``info`` (a dict) as JSON with mode 0600."""
    missing = [k for k in REQUIRED if k not in info]
    if missing:
        raise ConnectionFileError(f"connection info lacks {', '.join(missing)}")
    directory = os.path.dirname(os.path.abspath(path))
    ensure_private_dir(directory)
    data = dict(info)
    if isinstance(data["key"], bytes):
        data["key"] = data["key"].decode("ascii")
    fd, tmp = tempfile.mkstemp(prefix=".conn-", dir=directory)  # mkstemp creates 0600
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def read_connection_file(path, check_permissions=True):
    """Load a connection file; refuse one that others could read."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ConnectionFileError(
            f"connection file {path} does not exist: is the controller running "
            f"(hpclaunch start / hpclaunch status)?") from None
    if check_permissions and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConnectionFileError(
            f"connection file {path} is readable by other users (mode "
            f"{stat.S_IMODE(st.st_mode):o}); it holds the cluster key. Fix with: chmod 600 {path}")
    try:
        with open(path) as f:
            info = json.load(f)
    except (OSError, ValueError) as e:
        raise ConnectionFileError(f"cannot read connection file {path}: {e}") from None
    if not isinstance(info, dict):
        raise ConnectionFileError(f"connection file {path} does not hold a JSON object")
    missing = [k for k in REQUIRED if k not in info]
    if missing:
        raise ConnectionFileError(f"connection file {path} lacks {', '.join(missing)}")
    if info["signature_scheme"] != "hmac-sha256":
        raise ConnectionFileError(
            f"connection file {path} uses signature scheme {info['signature_scheme']!r}; "
            "only hmac-sha256 is supported")
    info["key"] = info["key"].encode("ascii")
    return info
