"""dask.distributed LocalCluster adapter (worker processes, one thread each)."""

import logging
import os

from ..tasks import noop, noop1
from .base import PeerAdapter


class DaskAdapter(PeerAdapter):
    name = "dask"
    # via_scheduler = the client default; direct = scatter/gather with direct=True
    bandwidth_modes = ("via_scheduler", "direct")
    automap_how = "dask.bag.from_sequence(items).map(noop1).compute(): dask picks the partitions"

    def start(self):
        from distributed import Client, LocalCluster

        self.cluster = LocalCluster(n_workers=self.n, threads_per_worker=1, processes=True,
                                    host="127.0.0.1", dashboard_address=None,
                                    silence_logs=logging.ERROR)
        self.client = Client(self.cluster)
        self.client.wait_for_workers(self.n, timeout=120)
        workers = sorted(self.client.scheduler_info(n_workers=-1)["workers"])
        if len(workers) < self.n:
            raise RuntimeError(f"only {len(workers)} of {self.n} dask workers came up")
        self.w0 = workers[0]
        self._fut = None

    def stop(self):
        client = getattr(self, "client", None)
        if client is not None:
            try:
                client.close()
            except Exception:
                pass
        cluster = getattr(self, "cluster", None)
        if cluster is not None:
            cluster.close()

    def info(self):
        import dask
        import distributed

        return {"package": "distributed", "version": distributed.__version__,
                "dask": dask.__version__,
                "compression": dask.config.get("distributed.comm.compression")}

    def worker_pids(self):
        return list(self.client.run(os.getpid).values())

    def submit_noop(self):
        return self.client.submit(noop, pure=False)

    def wait_all(self, handles):
        from distributed import wait

        wait(handles)
        bad = [f for f in handles if f.status != "finished"]
        if bad:
            raise RuntimeError(f"{len(bad)} dask tasks did not finish: first is {bad[0].status}")

    def fetch_results(self, handles):
        self.client.gather(handles)  # dask keeps results on the workers until asked

    def map_noop(self, count):
        return self.client.gather(self.client.map(noop1, range(count), pure=False))

    def automap_noop(self, count):
        import dask.bag

        return dask.bag.from_sequence(range(count)).map(noop1).compute(scheduler=self.client)

    def roundtrip_noop(self):
        return self.client.submit(noop, pure=False).result()

    def push(self, array, mode="via_scheduler"):
        if self._fut is not None:
            self._fut.release()
            self._fut = None
        self._fut = self.client.scatter(array, workers=[self.w0], hash=False,
                                        direct=(mode == "direct"))

    def pull(self, mode="via_scheduler"):
        return self.client.gather(self._fut, direct=(mode == "direct"))
