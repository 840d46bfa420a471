"""Where profiles live: ``$HPCLAUNCH_DIR`` (default ``~/.hpclaunch``)/``profile_<name>``.

Every part needs to find connection files from a profile name, so the rule lives
here, once, next to the connection-file code.
"""

import os

DEFAULT_PROFILE = "default"


def hpclaunch_dir():
    return os.path.abspath(os.path.expanduser(os.environ.get("HPCLAUNCH_DIR") or "~/.hpclaunch"))


def profile_dir(profile=None, profile_dir=None):
    """The directory of a profile (not created here)."""
    if profile_dir:
        return os.path.abspath(os.path.expanduser(profile_dir))
    return os.path.join(hpclaunch_dir(), f"profile_{profile or DEFAULT_PROFILE}")


def security_dir(pdir):
    return os.path.join(pdir, "security")


def logs_dir(pdir):
    return os.path.join(pdir, "logs")


def client_file(pdir):
    return os.path.join(security_dir(pdir), "client.json")


def engine_file(pdir):
    return os.path.join(security_dir(pdir), "engine.json")


def list_profiles():
    """Names of the profiles that exist under the hpclaunch dir."""
    root = hpclaunch_dir()
    if not os.path.isdir(root):
        return []
    return sorted(d[len("profile_"):] for d in os.listdir(root)
                  if d.startswith("profile_") and os.path.isdir(os.path.join(root, d)))
