"""How the task scheduler picks an engine, as ipyparallel defines the schemes.

Each scheme gets ``loads`` — outstanding tasks per candidate engine, listed
least-recently-used first — and returns an index into that list.
"""

import random


def leastload(loads):
    """The engine with the fewest outstanding tasks; LRU order breaks ties."""
    return loads.index(min(loads))


def lru(loads):
    """Always the least recently used engine."""
    return 0


def plainrandom(loads):
    return random.randrange(len(loads))


def twobin(loads):
    """Two random picks; the less recently used of the two."""
    n = len(loads)
    return min(random.randrange(n), random.randrange(n))


def weighted(loads):
    """Two picks weighted by inverse load; the less loaded of the two."""
    weights = [1.0 / (1e-6 + load) for load in loads]
    a, b = random.choices(range(len(loads)), weights=weights, k=2)
    return a if loads[a] <= loads[b] else b


SCHEMES = {f.__name__: f for f in (leastload, lru, plainrandom, twobin, weighted)}


def get_scheme(name):
    try:
        return SCHEMES[name]
    except KeyError:
        raise ValueError(f"unknown scheduler scheme {name!r}; choose one of "
                         f"{', '.join(sorted(SCHEMES))}") from None
