"""Start a controller and 4 engines, map a function over them with a progress bar, stop.

Run it with ``./dev run`` (which sets up .venv first) or ``python examples/quickstart.py``.
"""

import os
import socket

import hpclaunch as hl


def slow_square(x):
    """Runs on an engine: a little sleep so the progress bar has something to show."""
    import time

    time.sleep(0.05)
    return x * x


def where_am_i():
    import os
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


def main():
    with hl.Cluster(n=4) as rc:
        print(f"{len(rc.ids)} engines up on {socket.gethostname()} (this is pid {os.getpid()}): "
              f"{rc[:].apply_sync(where_am_i)}")
        # load-balanced: one task per item, handed to whichever engine is free
        result = rc.load_balanced_view().map_async(slow_square, range(64), chunksize=1)
        result.wait_interactive()
        squares = result.get()
        print(f"squares of 0..63: {squares[:5]} ... {squares[-2:]}; sum = {sum(squares)}")
        assert squares == [x * x for x in range(64)]
    print("cluster stopped; no process left behind")


if __name__ == "__main__":
    main()
