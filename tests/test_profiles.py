"""Profiles, site-configs and job templates: parsing, validation and rendering (no scheduler)."""

import os
import sys

import pytest

from batch_helpers import hpclaunch, make_profile
from conftest import processes_under

from hpclaunch.launch import Profile, ProfileError, TemplateError, load_profile, plan_jobs
from hpclaunch.launch.render import render_template, skip_directives, split_engines
from hpclaunch.launch.sites import list_sites, load_site, site_configs_dir, site_source
from hpclaunch.protocol import paths

ENGINE = ["/opt/venv/bin/python", "-m", "hpclaunch.engine", "--file", "/p/security/engine.json"]



def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


# -- parsing and validation ------------------------------------------------------
def test_profile_toml_round_trips(tmp_path):
    profile = Profile(system="slurm", queue="debug", walltime="00:30:00", engines_per_node=4,
                      memory_per_engine="2G", env_setup=["module load python", 'echo "hi"'])
    path = str(tmp_path / "profile.toml")
    profile.save(path, header="a test profile")
    assert Profile.load(path) == profile


def test_missing_profile_file_means_local_defaults(tmp_path):
    assert load_profile(str(tmp_path)).system == "local"


def test_unknown_key_names_the_closest_valid_key(tmp_path):
    path = write(str(tmp_path / "profile.toml"), 'system = "slurm"\nwaltime = "01:00:00"\n')
    with pytest.raises(ProfileError) as info:
        Profile.load(path)
    message = str(info.value)
    assert "unknown key 'waltime'" in message and "did you mean 'walltime'?" in message
    assert path in message


@pytest.mark.parametrize("walltime", ["1:00", "01:60:00", "one hour", "01:00:00:00"])
def test_bad_walltime_says_the_format(walltime):
    with pytest.raises(ProfileError, match=r"is not HH:MM:SS"):
        Profile(system="slurm", walltime=walltime)


def test_long_walltimes_are_fine():
    Profile(system="slurm", walltime="48:00:00")


@pytest.mark.parametrize("field, value, words", [
    ("system", "slrum", "did you mean 'slurm'?"),
    ("nodes", 0, "at least 1"),
    ("engines_per_node", -2, "at least 1"),
    ("memory_per_engine", "lots", "'512M' or '2G'"),
    ("job_shape", "jobs:0", "'jobs:K'"),
    ("job_shape", "many", "'one-job'"),
    ("fanout", "mpiexc", "did you mean 'mpiexec'?"),
    ("env_setup", "module load python", "list of strings"),
])
def test_bad_fields_are_named(field, value, words):
    with pytest.raises(ProfileError) as info:
        Profile(**{"system": "slurm", field: value})
    assert words in str(info.value)


def test_invalid_toml_is_reported_with_the_file(tmp_path):
    path = write(str(tmp_path / "profile.toml"), 'system = "slurm\n')
    with pytest.raises(ProfileError, match="is not valid TOML"):
        Profile.load(path)


def test_zero_engines_is_refused(tmp_path):
    with pytest.raises(ProfileError, match="at least 1 engine"):
        plan_jobs(Profile(system="slurm"), 0, str(tmp_path), ENGINE)


def test_engines_split_evenly_over_jobs():
    assert split_engines(10, 3) == [4, 3, 3]
    assert split_engines(2, 5) == [1, 1]


# -- rendering ------------------------------------------------------------------
def test_slurm_one_job_fans_out_with_srun(tmp_path):
    profile = Profile(system="slurm", queue="debug", account="proj", engines_per_node=4,
                      memory_per_engine="1G", cpus_per_engine=2, env_setup=["module load py"])
    (job,) = plan_jobs(profile, 8, str(tmp_path), ENGINE)
    assert job.submit == f"sbatch --parsable {tmp_path}/jobs/engines-1.sh"
    for line in ("#SBATCH --partition=debug", "#SBATCH --account=proj", "#SBATCH --ntasks=8",
                 "#SBATCH --nodes=2", "#SBATCH --cpus-per-task=2", "#SBATCH --mem-per-cpu=512M",
                 "module load py",
                 "srun --ntasks=8 --cpus-per-task=2 --kill-on-bad-exit=0 " + " ".join(ENGINE)
                 + ' --drain-at "$HPCLAUNCH_DRAIN_AT"'):
        assert line in job.text.splitlines(), line


def test_slurm_array_runs_one_engine_per_task(tmp_path):
    (job,) = plan_jobs(Profile(system="slurm", job_shape="array"), 8, str(tmp_path), ENGINE)
    lines = job.text.splitlines()
    assert "#SBATCH --array=1-8" in lines and "#SBATCH --ntasks=1" in lines
    assert "exec " + " ".join(ENGINE) + ' --drain-at "$HPCLAUNCH_DRAIN_AT"' in lines
    assert job.array_size == 8


def test_jobs_shape_makes_k_jobs(tmp_path):
    jobs = plan_jobs(Profile(system="slurm", job_shape="jobs:3"), 8, str(tmp_path), ENGINE)
    assert [j.engines for j in jobs] == [3, 3, 2]
    assert len({j.path for j in jobs}) == 3


def test_skip_and_extra_directives(tmp_path):
    profile = Profile(system="slurm", memory_per_engine="2G", extra_directives=["--qos=debug"],
                      skip_directives=["--mem-per-cpu", "--job-name"])
    (job,) = plan_jobs(profile, 2, str(tmp_path), ENGINE)
    assert "#SBATCH --qos=debug" in job.text
    assert "--mem-per-cpu" not in job.text and "--job-name" not in job.text
    text = "#$ -l h_vmem=2G\n#$ -l h_rt=01:00:00\n"
    assert skip_directives(text, "#$", ["-l h_vmem"]) == "#$ -l h_rt=01:00:00\n"


def test_memory_is_formatted_per_scheduler(tmp_path):
    def render(system):
        return plan_jobs(Profile(system=system, memory_per_engine="2G", fanout="mpiexec"), 1,
                         str(tmp_path), ENGINE)[0].text

    assert "--mem-per-cpu=2048M" in render("slurm")
    assert "mem=2048mb" in render("pbs")
    assert "h_vmem=2048M" in render("sge")
    assert "rusage[mem=2048MB]" in render("lsf")


def test_srun_fanout_needs_slurm(tmp_path):
    with pytest.raises(ProfileError, match="fanout = 'srun' needs Slurm"):
        plan_jobs(Profile(system="pbs", fanout="srun"), 2, str(tmp_path), ENGINE)


@pytest.mark.parametrize("site", list_sites())
def test_every_site_config_renders(site, tmp_path):
    assert "Source: http" in site_source(site), f"{site} must name its public source"
    profile = load_site(site)
    jobs = plan_jobs(profile, 256, str(tmp_path), ENGINE)
    assert sum(j.engines for j in jobs) == 256
    for job in jobs:
        assert job.text.startswith("#!/bin/bash\n")
        assert " ".join(ENGINE) in job.text
        assert "{{" not in job.text and "{%" not in job.text


def test_there_are_site_configs_for_every_batch_system():
    systems = {load_site(s).system for s in list_sites()}
    assert {"slurm", "pbs", "sge", "lsf"} <= systems
    assert len(list_sites()) >= 8
    assert os.path.isdir(site_configs_dir())


# -- template errors --------------------------------------------------------------
def test_undefined_field_names_field_and_line(tmp_path):
    template = write(str(tmp_path / "mine.sh.j2"),
                     "#!/bin/bash\n#SBATCH --ntasks={{ engines }}\n#SBATCH --qos={{ qos }}\n")
    with pytest.raises(TemplateError) as info:
        render_template(template, {"engines": 2})
    assert "line 3" in str(info.value) and "'qos'" in str(info.value)


def test_bash_length_syntax_is_reported_as_a_template_error(tmp_path):
    template = write(str(tmp_path / "mine.sh.j2"), '#!/bin/bash\nhosts=(a b)\necho ${#hosts[@]}\n')
    with pytest.raises(TemplateError) as info:
        render_template(template, {})
    assert "line" in str(info.value) and "{{ '${#' }}" in str(info.value)


def test_a_profile_can_use_its_own_template(tmp_path):
    write(str(tmp_path / "mine.sh.j2"), "#!/bin/bash\n# {{ total_engines }} via {{ fanout }}\n"
          "{{ engine_command }}\n")
    (job,) = plan_jobs(Profile(system="slurm", template="mine.sh.j2"), 3, str(tmp_path), ENGINE)
    assert job.text.splitlines()[1] == "# 3 via srun"


# -- CLI --------------------------------------------------------------------------
def test_profile_create_show_list_and_render():
    created = hpclaunch("profile", "create", "site-test", "--from-site", "perlmutter")
    assert created.returncode == 0, created.stderr
    shown = hpclaunch("profile", "show", "site-test")
    assert shown.returncode == 0 and "'slurm'" in shown.stdout and "--qos=regular" in shown.stdout
    listed = hpclaunch("profile", "list")
    assert "site-test" in listed.stdout and "slurm" in listed.stdout
    rendered = hpclaunch("render", "--profile", "site-test", "-n", "256")
    assert rendered.returncode == 0, rendered.stderr
    assert "#SBATCH --ntasks=256" in rendered.stdout and "#SBATCH --nodes=2" in rendered.stdout
    pdir = paths.profile_dir("site-test")
    assert f"sbatch --parsable {pdir}/jobs/engines-1.sh" in rendered.stdout
    assert not os.path.exists(os.path.join(pdir, "jobs")), "render must not write or submit"


def test_unknown_profile_lists_existing_ones():
    hpclaunch("profile", "create", "known-one", "--system", "slurm")
    result = hpclaunch("render", "--profile", "no-such-profile", "-n", "2")
    assert result.returncode == 1
    assert "no profile named 'no-such-profile'" in result.stderr and "known-one" in result.stderr


def test_profile_create_refuses_unknown_system_and_site():
    bad_system = hpclaunch("profile", "create", "x1", "--system", "slrum")
    assert bad_system.returncode == 1 and "did you mean 'slurm'?" in bad_system.stderr
    bad_site = hpclaunch("profile", "create", "x2", "--from-site", "nowhere")
    assert bad_site.returncode == 1 and "perlmutter" in bad_site.stderr


# -- shipping and scheduler words -------------------------------------------------
def test_templates_ship_with_the_package():
    from hpclaunch.launch.render import templates_dir
    from hpclaunch.launch.scheduler import dialect

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "setup.cfg")) as f:
        setup_cfg = f.read()
    assert "share/hpclaunch/templates = templates/*.j2" in setup_cfg
    assert "share/hpclaunch/site-configs = site-configs/*.toml" in setup_cfg
    for system in ("slurm", "pbs", "sge", "lsf"):
        assert os.path.isfile(os.path.join(templates_dir(), dialect(system).template)), system


def test_slurm_states_map_to_one_enum():
    from hpclaunch.launch import JobState
    from hpclaunch.launch.scheduler import aggregate
    from hpclaunch.launch.slurm import _group, slurm_state

    assert slurm_state("CANCELLED by 0") is JobState.CANCELLED
    assert slurm_state("COMPLETING") is JobState.RUNNING
    assert slurm_state("OUT_OF_MEMORY") is JobState.FAILED
    assert slurm_state("TIMEOUT") is JobState.FAILED
    squeue = "7|RUNNING\n7|PENDING\n8|COMPLETED\n9|FAILED\n"
    grouped = _group(squeue, ["7", "8"])
    assert {j: aggregate(s) for j, s in grouped.items()} == {"7": JobState.RUNNING,
                                                             "8": JobState.DONE}
    assert aggregate([JobState.DONE, JobState.FAILED]) is JobState.FAILED


def test_systems_without_a_scheduler_say_what_works(monkeypatch):
    from hpclaunch.launch import SchedulerError
    from hpclaunch.launch import scheduler as scheduler_module
    from hpclaunch.launch.scheduler import Dialect, scheduler

    class RenderOnly(Dialect):
        name = "render-only"

    monkeypatch.setitem(scheduler_module._DIALECTS, RenderOnly.name, RenderOnly)
    assert scheduler("slurm").name == "slurm"
    with pytest.raises(SchedulerError, match="renders render-only job scripts but cannot submit"):
        scheduler("render-only")


@pytest.mark.parametrize("system, command", [("slurm", "sbatch"), ("sge", "qsub"),
                                             ("pbs", "qsub"), ("torque", "qsub"),
                                             ("lsf", "bsub")])
def test_missing_submit_command_names_it_and_the_system(system, command):
    """No scheduler needed: with only Python's folder on PATH the submit command is missing,
    start says which and for which system, and leaves no process behind."""
    name = f"{system}-no-path"
    pdir = make_profile(name, system)
    env = dict(os.environ, PATH=os.path.dirname(sys.executable))
    result = hpclaunch("start", "--profile", name, "-n", "2", "--daemonize", env=env)
    assert result.returncode == 1
    assert f"{command} is not on PATH, so the {system} batch system cannot be used" \
        in result.stderr
    assert processes_under(pdir) == []
