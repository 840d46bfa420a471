"""stdlib concurrent.futures.ProcessPoolExecutor adapter: the no-network floor."""

import concurrent.futures as cf
import multiprocessing as mp
import sys

from ..tasks import noop, noop1
from .base import PeerAdapter


class PoolAdapter(PeerAdapter):
    name = "pool"
    not_defined = {"bandwidth": "a process pool has no push/pull to one worker"}
    automap_how = "ex.map(noop1, items): the executor's default chunksize (1)"

    def start(self):
        # Workers are forked on demand; n no-ops make 'start' mean "n workers ready" as well.
        self.ex = cf.ProcessPoolExecutor(max_workers=self.n)
        cf.wait([self.ex.submit(noop) for _ in range(self.n)])

    def stop(self):
        ex = getattr(self, "ex", None)
        if ex is not None:
            ex.shutdown(wait=True, cancel_futures=True)

    def info(self):
        return {"package": "concurrent.futures", "version": sys.version.split()[0],
                "start_method": mp.get_start_method(allow_none=False)}

    def worker_pids(self):
        return list(self.ex._processes)  # no public accessor; the pid -> Process dict

    def submit_noop(self):
        return self.ex.submit(noop)

    def wait_all(self, handles):
        for f in handles:
            f.result()

    def map_noop(self, count):
        return list(self.ex.map(noop1, range(count), chunksize=1))

    def automap_noop(self, count):
        return list(self.ex.map(noop1, range(count)))

    def roundtrip_noop(self):
        return self.ex.submit(noop).result()
