"""Malloc on transparent huge pages for the processes hpclaunch starts.

A received message of many MB lands in freshly allocated memory, and faulting that in 4 KiB
at a time took about as long as the transfer itself (README, "Benchmarks"); numpy asks for
huge pages for its own big arrays for the same reason. glibc does so for malloc only when
told at start-up, through ``GLIBC_TUNABLES``. A user's own ``glibc.malloc.hugetlb`` setting
is kept; other tunables are kept too. Where THP is "never" (or libc is not glibc) the
setting does nothing.
"""

TUNABLE = "glibc.malloc.hugetlb"

#: The same rule for a remote shell (POSIX sh), run after the profile's env_setup, for
#: engines started over ssh: they do not inherit this process's environment.
SHELL_LINE = (
    'case ":${GLIBC_TUNABLES-}" in *:' + TUNABLE + '=*) ;; '
    '*) GLIBC_TUNABLES="${GLIBC_TUNABLES:+$GLIBC_TUNABLES:}' + TUNABLE + '=1"; '
    'export GLIBC_TUNABLES;; esac')


def with_huge_pages(env):
    """``env`` (a dict, changed in place and returned) with the tunable added if absent."""
    tunables = env.get("GLIBC_TUNABLES", "")
    if TUNABLE + "=" not in tunables:
        env["GLIBC_TUNABLES"] = ":".join(t for t in (tunables, TUNABLE + "=1") if t)
    return env
