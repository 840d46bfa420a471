"""ipyparallel adapter, written against the public IPython.parallel client API only and with
the package as a parameter, so hpclaunch (same API) reuses it by subclassing."""

import importlib

from ..procs import descendants_matching
from ..tasks import noop, noop1
from .base import PeerAdapter, Unsupported


class IppAdapter(PeerAdapter):
    name = "ipp"
    module_name = "ipyparallel"
    #: regex over an engine's command line (engines are descendants of the client)
    engine_cmdline = r"ipyparallel\.engine"
    automap_how = "rc[:].map_sync(noop1, items): one chunk per engine (ipp's lview.map has chunksize=1)"

    def _mod(self):
        return importlib.import_module(self.module_name)

    def start(self):
        self.cluster = self._mod().Cluster(n=self.n, log_level=40)
        self.rc = self.cluster.start_and_connect_sync()
        self.rc.wait_for_engines(self.n, timeout=120)
        if len(self.rc.ids) < self.n:
            raise RuntimeError(f"only {len(self.rc.ids)} of {self.n} engines registered")
        self.dview = self.rc[self.rc.ids[0]]  # DirectView on one engine
        self.dview.block = True
        make_lview = getattr(self.rc, "load_balanced_view", None)
        self.lview = make_lview() if make_lview is not None else None

    def stop(self):
        rc = getattr(self, "rc", None)
        if rc is not None:
            try:
                rc.close()
            except Exception:
                pass
        cluster = getattr(self, "cluster", None)
        if cluster is not None:
            cluster.stop_cluster_sync()

    def info(self):
        mod = self._mod()
        out = {"package": self.module_name, "version": getattr(mod, "__version__", "?")}
        scheme = getattr(self.rc, "_task_scheme", None)
        if scheme:
            out["task_scheduler"] = scheme
        return out

    def worker_pids(self):
        return [p.pid for p in descendants_matching(self.engine_cmdline)]

    def _lb(self):
        if self.lview is None:
            raise Unsupported(f"{self.name} Client has no load_balanced_view() yet")
        return self.lview

    def submit_noop(self):
        return self._lb().apply_async(noop)

    def wait_all(self, handles):
        for h in handles:
            h.get()

    def map_noop(self, count):
        return self._lb().map_async(noop1, range(count), chunksize=1).get()

    def automap_noop(self, count):
        return self.rc[:].map_sync(noop1, range(count))

    def roundtrip_noop(self):
        return self.dview.apply_sync(noop)

    def push(self, array, mode="default"):
        self.dview.push({"_bench_arr": array}, block=True)

    def pull(self, mode="default"):
        return self.dview.pull("_bench_arr", block=True)
