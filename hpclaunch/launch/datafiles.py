"""Finding the data folders hpclaunch ships beside its code: templates/ and site-configs/.

They sit at the top of the source tree (a checkout or editable install) and are
installed as data files under <prefix>/share/hpclaunch (venv, system or --user).
"""

import os
import site
import sys

SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def data_dir_candidates(name, env_var):
    """Folders that may hold ``name`` (e.g. 'templates'), in the order they are tried."""
    prefixes = [sys.prefix, getattr(site, "USER_BASE", None) or ""]
    return [c for c in [os.environ.get(env_var), os.path.join(SOURCE_ROOT, name)]
            + [os.path.join(p, "share", "hpclaunch", name) for p in prefixes if p] if c]


def find_data_dir(name, env_var):
    """The first existing candidate folder, or None."""
    for candidate in data_dir_candidates(name, env_var):
        if os.path.isdir(candidate):
            return candidate
    return None


def require_data_dir(name, env_var, error, what):
    """The folder ``name``, or ``error`` (an exception class) saying where it was looked for
    and that ``env_var`` can point to one (``what``: e.g. "job templates")."""
    found = find_data_dir(name, env_var)
    if found is None:
        raise error(f"cannot find hpclaunch's {what} (looked in "
                    f"{', '.join(data_dir_candidates(name, env_var))}); reinstall hpclaunch "
                    f"or set {env_var} to a folder of {what}")
    return found
