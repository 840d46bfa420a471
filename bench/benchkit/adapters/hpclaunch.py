"""hpclaunch adapter: the ipyparallel adapter with the package swapped (the client API mirrors
ipyparallel), except that automap uses hpclaunch's own automatic chunking."""

from ..tasks import noop1
from .ipp import IppAdapter


class HpclaunchAdapter(IppAdapter):
    name = "hpclaunch"
    module_name = "hpclaunch"
    engine_cmdline = r"hpclaunch[._ -]engine"
    automap_how = "lview.map(noop1, items, chunksize=None): hpclaunch picks the chunk size"

    def stop(self):
        # Stop first: the cluster may shut its engines down through this client's connection.
        cluster = getattr(self, "cluster", None)
        try:
            if cluster is not None:
                cluster.stop_cluster_sync()
        finally:
            rc = getattr(self, "rc", None)
            if rc is not None and hasattr(rc, "close"):
                rc.close()

    def automap_noop(self, count):
        result = self._lb().map(noop1, range(count), chunksize=None)
        return result.get() if hasattr(result, "get") else list(result)
