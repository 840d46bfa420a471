"""Site-configs: ready-made profile settings for known machines (``site-configs/*.toml``).

Each file holds profile fields only, with comments naming the public page its
facts come from, so ``hpclaunch profile create NAME --from-site perlmutter``
starts a user from what their centre documents rather than from a blank file.
"""

import os

from .datafiles import require_data_dir
from .profile import Profile, ProfileError

SITES_ENV = "HPCLAUNCH_SITE_CONFIGS"


def site_configs_dir():
    """$HPCLAUNCH_SITE_CONFIGS, the source tree's site-configs/, or the installed copy."""
    return require_data_dir("site-configs", SITES_ENV, ProfileError, "site-configs")


def list_sites():
    return sorted(f[:-len(".toml")] for f in os.listdir(site_configs_dir())
                  if f.endswith(".toml"))


def site_path(name):
    path = os.path.join(site_configs_dir(), f"{name}.toml")
    if not os.path.isfile(path):
        raise ProfileError(f"no site-config named {name!r}; known sites: "
                           f"{', '.join(list_sites())}")
    return path


def load_site(name):
    """The Profile a site-config describes."""
    return Profile.load(site_path(name))


def site_source(name):
    """The leading comment block of a site-config (where its facts come from)."""
    lines = []
    with open(site_path(name)) as f:
        for line in f:
            if not line.startswith("#"):
                break
            lines.append(line[1:].strip())
    return "\n".join(lines)
