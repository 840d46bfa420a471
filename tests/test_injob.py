"""Batch-script mode and controller-in-job without a scheduler: reading the allocation from
the environment, the errors outside a job, and the job script that render shows."""

import os
import subprocess

import pytest

from batch_helpers import hpclaunch, make_profile
from conftest import processes_under
from hpclaunch.launch import LaunchError, Profile, ProfileError, state_file
from hpclaunch.launch.allocation import NotInAllocation, current_allocation
from hpclaunch.launch.fanout import drain_args
from test_mpi import mpich  # noqa: F401 - the fixture that builds the mpich venv

#: Scheduler variables a test's own shell may have (a test run inside a real job).
JOB_VARIABLES = ("SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID", "JOB_ID")


def outside_any_job():
    return {k: v for k, v in os.environ.items() if k not in JOB_VARIABLES}


@pytest.mark.parametrize("environ, expected", [
    ({"SLURM_JOB_ID": "41", "SLURM_NTASKS": "8", "SLURM_JOB_NUM_NODES": "2"},
     ("slurm", "41", 8, "SLURM_NTASKS")),
    ({"SLURM_JOB_ID": "42", "SLURM_JOB_NUM_NODES": "3"}, ("slurm", "42", 3, "SLURM_JOB_NUM_NODES")),
    ({"SLURM_JOB_ID": "43"}, ("slurm", "43", None, "")),
    ({"LSB_JOBID": "7", "LSB_DJOB_NUMPROC": "16"}, ("lsf", "7", 16, "LSB_DJOB_NUMPROC")),
    ({"JOB_ID": "9", "SGE_ROOT": "/var/lib/gridengine", "NSLOTS": "4"}, ("sge", "9", 4, "NSLOTS")),
    ({"PBS_JOBID": "5.server", "PBS_NP": "6"}, ("pbs", "5.server", 6, "PBS_NP")),
])
def test_allocation_size_from_the_schedulers_variables(environ, expected):
    found = current_allocation(environ)
    assert (found.system, found.job_id, found.size, found.size_source) == expected


def test_pbs_allocation_counts_nodefile_lines(tmp_path):
    nodefile = tmp_path / "nodes"
    nodefile.write_text("n1\nn1\nn2\nn2\nn3\n")
    found = current_allocation({"PBS_JOBID": "12.pbs", "PBS_NODEFILE": str(nodefile)})
    assert (found.system, found.size) == ("pbs", 5)


def test_fanout_follows_the_profile_then_the_scheduler():
    slurm = current_allocation({"SLURM_JOB_ID": "1", "SLURM_NTASKS": "2"})
    sge = current_allocation({"JOB_ID": "1", "NSLOTS": "2"})
    assert slurm.fanout_for(Profile()) == "srun"
    assert sge.fanout_for(Profile()) == "mpiexec"
    assert slurm.fanout_for(Profile(fanout="mpiexec")) == "mpiexec"


def test_fanout_engines_drain_when_the_job_says_when():
    assert drain_args({}) == []
    assert drain_args({"HPCLAUNCH_DRAIN_AT": "1795000000"}) == ["--drain-at", "1795000000"]
    with pytest.raises(LaunchError, match=r"HPCLAUNCH_DRAIN_AT = 'soon' is not a time in "
                                          r"seconds since 1970"):
        drain_args({"HPCLAUNCH_DRAIN_AT": "soon"})


def test_outside_a_job_is_a_clear_error():
    with pytest.raises(NotInAllocation, match="not in one .*SLURM_JOB_ID.*salloc"):
        current_allocation({"HOME": "/root"})


def test_start_in_job_outside_a_job_says_so_and_starts_nothing():
    pdir = make_profile("injob-outside", "local")
    result = hpclaunch("start", "--in-job", "--profile", "injob-outside", "--",
                       "python", "-c", "print('driver ran')", env=outside_any_job())
    assert result.returncode == 1
    assert "hpclaunch start --in-job runs inside a batch job" in result.stderr
    assert "driver ran" not in result.stdout
    assert not os.path.exists(state_file(pdir))
    assert processes_under(pdir) == []


def test_in_job_without_a_size_asks_for_n():
    make_profile("injob-nosize", "local")
    env = dict(outside_any_job(), SLURM_JOB_ID="77")
    result = hpclaunch("start", "--in-job", "--profile", "injob-nosize", env=env)
    assert result.returncode == 1
    assert "cannot tell how many engines slurm job 77 holds" in result.stderr
    assert "pass -n N" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--", "python", "driver.py"], "a command to run (python driver.py) needs --in-job"),
    (["--in-job", "--controller-in-job"], "--in-job runs inside a batch job and "
                                          "--controller-in-job submits one"),
    (["--in-job", "--daemonize", "--", "python", "driver.py"], "use one of them"),
    (["--controller-in-job"], "--controller-in-job submits a batch job, but the profile "
                              "has system = 'local', which has no batch jobs"),
])
def test_clashing_options_are_named(args, message):
    make_profile("injob-usage", "local")
    result = hpclaunch("start", "--profile", "injob-usage", *args, env=outside_any_job())
    assert result.returncode == 2
    assert message in " ".join(result.stderr.split())


def test_render_shows_the_controller_job():
    pdir = make_profile("injob-render", "slurm", walltime="00:20:00")
    result = hpclaunch("render", "--profile", "injob-render", "-n", "4", "--controller-in-job",
                       "--timeout", "90")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"# ---- {pdir}/jobs/controller.sh (controller and 4 engines)" in out
    assert "#SBATCH --ntasks=4\n" in out and "#SBATCH --time=00:20:00\n" in out
    assert (f"exec {__import__('sys').executable} -m hpclaunch start --in-job --profile-dir "
            f"{pdir} -n 4 --timeout 90\n") in out
    assert "srun" not in out.split("exec ", 1)[1], "the in-job start fans out, not the script"
    assert f"sbatch --parsable {pdir}/jobs/controller.sh" in out


def test_profile_field_selects_the_controller_job_and_validates():
    make_profile("injob-field", "sge", controller_in_job=True, parallel_environment="smp")
    result = hpclaunch("render", "--profile", "injob-field", "-n", "3")
    assert result.returncode == 0, result.stderr
    assert "#$ -pe smp 3" in result.stdout and "start --in-job" in result.stdout
    with pytest.raises(ProfileError, match="controller_in_job = 'yes' must be true or false"):
        Profile(controller_in_job="yes")


def test_controller_job_needs_one_job_shape():
    make_profile("injob-array", "slurm", job_shape="array")
    result = hpclaunch("render", "--profile", "injob-array", "-n", "4", "--controller-in-job")
    assert result.returncode == 1
    assert "job_shape = 'array' does not apply" in result.stderr


@pytest.mark.mpi
def test_in_job_mpiexec_fanout_runs_the_driver(mpich, tmp_path):  # noqa: F811
    """The mpiexec fan-out, as under PBS/SGE/LSF. No such scheduler exists here, so the test
    sets the variables an LSF job has (LSB_JOBID, LSB_DJOB_NUMPROC); mpiexec (the mpich
    wheel's), the controller, the engines and the driver are real."""
    name = "injob-mpiexec"
    pdir = make_profile(name, "lsf")
    driver = tmp_path / "driver.py"
    driver.write_text(
        "import hpclaunch as hl\n"
        f"rc = hl.Client(profile={name!r}, timeout=30)\n"
        "pids = rc[:].apply_sync(lambda: __import__('os').getpid())\n"
        "print('driver:', len(rc.ids), 'engines,', len(set(pids)), 'processes,',\n"
        "      sum(rc[:].map_sync(lambda x: x + 1, range(30))))\n"
        "rc.close()\n")
    python = os.path.join(mpich, "bin", "python")
    env = dict(outside_any_job(), LSB_JOBID="4242", LSB_DJOB_NUMPROC="3",
               PATH=os.path.join(mpich, "bin") + os.pathsep + os.environ["PATH"])
    result = subprocess.run([python, "-m", "hpclaunch", "start", "--in-job", "--profile", name,
                             "--", python, str(driver)], capture_output=True, text=True,
                            env=env, timeout=180, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "inside lsf job 4242, engines by mpiexec" in result.stdout
    assert "driver: 3 engines, 3 processes, 465" in result.stdout
    assert not os.path.exists(state_file(pdir))
    assert processes_under(pdir) == []


@pytest.mark.mpi
def test_a_failed_add_inside_a_job_stops_the_fanout_it_started(mpich, monkeypatch):  # noqa: F811
    """Inside a job, ``engines add`` starts a second mpiexec fan-out; when the add fails (here:
    no time to register), that fan-out and its engines are stopped and leave the state."""
    import hpclaunch as hl
    from hpclaunch.launch import ClusterState
    from hpclaunch.launch.allocation import Allocation

    name = "injob-undo"
    pdir = make_profile(name, "lsf")
    monkeypatch.setenv("PATH", os.path.join(mpich, "bin") + os.pathsep + os.environ["PATH"])
    cluster = hl.Cluster(n=2, profile=name, allocation=Allocation("lsf", "4242", 2, "test"))
    rc = cluster.start_and_connect_sync()
    try:
        (first,) = ClusterState.load(pdir).fanouts
        before = {p.pid for p in processes_under(pdir)}
        with pytest.raises(LaunchError, match="only 0 of 2 engines registered"):
            cluster.add_engines_sync(2, rc=rc, timeout=0.01)
        state = ClusterState.load(pdir)
        assert [f.process.pid for f in state.fanouts] == [first.process.pid] and state.n == 2
        left = [p for p in processes_under(pdir) if p.pid not in before]
        assert left == [], f"the second fan-out's processes survived the undo: {left}"
        assert rc[:].apply_sync(lambda: "still two") == ["still two"] * len(rc.ids)
    finally:
        cluster.stop_cluster_sync()
    assert processes_under(pdir) == []
