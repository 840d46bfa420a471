"""Parsl HighThroughputExecutor adapter (one local block of n workers)."""

import os
import time

from ..tasks import noop
from .base import PeerAdapter


class ParslAdapter(PeerAdapter):
    name = "parsl"
    not_defined = {
        "map": "parsl has no map; a loop of app calls is what 'throughput' measures",
        "automap": "parsl has no map with automatic chunking",
        "bandwidth": "parsl apps have no push/pull to one worker",
    }

    def start(self):
        import parsl
        from parsl.app.app import python_app
        from parsl.config import Config
        from parsl.executors import HighThroughputExecutor
        from parsl.providers import LocalProvider

        self.htex = HighThroughputExecutor(
            label="htex", address="127.0.0.1", loopback_address="127.0.0.1",
            max_workers_per_node=self.n,
            cores_per_worker=1e-3,  # allow n > cores (oversubscription)
            provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1))
        run_dir = os.path.join(os.environ.get("BENCH_HOME", "/tmp/hpclaunch-bench/home"), "parsl")
        self.dfk = parsl.load(Config(executors=[self.htex], run_dir=run_dir, strategy="none",
                                     usage_tracking=0, initialize_logging=False))
        self.app = python_app(noop, executors=["htex"])
        deadline = time.monotonic() + 120
        while sum(m.get("worker_count", 0) for m in self.htex.connected_managers()) < self.n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"parsl workers not up after 120 s: {self.htex.connected_managers()}")
            time.sleep(0.02)

    def stop(self):
        import parsl

        if getattr(self, "dfk", None) is not None:
            self.dfk.cleanup()
            parsl.clear()

    def info(self):
        import parsl

        return {"package": "parsl", "version": parsl.__version__,
                "executor": "HighThroughputExecutor", "encrypted": self.htex.encrypted}

    def submit_noop(self):
        return self.app()

    def wait_all(self, handles):
        for f in handles:
            f.result()

    def roundtrip_noop(self):
        return self.app().result()
