"""Turn a profile and an engine count into the exact job scripts and submit commands.

``hpclaunch render`` and ``hpclaunch start`` both call ``plan_jobs``, so what a
user previews is byte for byte what gets submitted. Templates are jinja2 files
(top-level ``templates/``, shipped as data files) rendered from profile fields;
a template mistake is reported with the template's file, line and the field.
"""

import dataclasses
import os
import re
import shlex

import jinja2

from ..protocol import paths
from .datafiles import find_data_dir, require_data_dir
from .hugepages import SHELL_LINE as HUGE_PAGES_SHELL_LINE
from .profile import ProfileError, parse_memory, parse_walltime
from .scheduler import dialect, submit_shell
from .sshcmd import ssh_command

TEMPLATE_ENV = "HPCLAUNCH_TEMPLATES"


class TemplateError(ProfileError):
    """A job template could not be found or rendered; names the file, line and field."""


@dataclasses.dataclass
class JobScript:
    """One job to submit: where its script goes, its text, and the command to submit it."""

    path: str
    text: str
    submit: str
    engines: int
    array_size: int
    output: str


def templates_dir():
    """Where the shipped templates are: $HPCLAUNCH_TEMPLATES, the source tree, or share/."""
    return require_data_dir("templates", TEMPLATE_ENV, TemplateError, "job templates")


def template_path(profile, pdir):
    """The template file a profile renders with (its own ``template``, else the system's)."""
    if profile.template:
        path = os.path.join(pdir, os.path.expanduser(profile.template))
        if not os.path.isfile(path):
            raise TemplateError(f"template = {profile.template!r}: no such file {path}")
        return path
    return os.path.join(templates_dir(), dialect(profile.system).template)


def split_engines(n, jobs):
    """``n`` engines over ``jobs`` jobs, as evenly as possible (no empty job)."""
    jobs = min(jobs, n)
    return [n // jobs + (1 if k < n % jobs else 0) for k in range(jobs)]


def plan_jobs(profile, n, pdir, engine_argv, first_index=1, in_job_command=None):
    """The JobScripts that start ``n`` engines running ``engine_argv`` for ``profile``;
    jobs are numbered from ``first_index`` (later than a running cluster's jobs).

    With ``in_job_command`` (controller-in-job) there is one job of ``n`` tasks whose
    script runs that command, which starts the controller and fans out the engines."""
    if n < 1:
        raise ProfileError(f"a cluster needs at least 1 engine, not -n {n}")
    if profile.system == "local":
        raise ProfileError("a local profile submits no jobs: engines start as processes on "
                           "this machine (set system = 'slurm' or another batch system)")
    kind = dialect(profile.system)
    if profile.effective_fanout == "srun" and profile.system != "slurm":
        raise ProfileError(f"fanout = 'srun' needs Slurm, but system = {profile.system!r}; "
                           "use fanout = 'mpiexec' or job_shape = 'array'")
    template = template_path(profile, pdir)
    jobs_dir = os.path.join(pdir, "jobs")
    logs = paths.logs_dir(pdir)
    array = profile.job_shape == "array"
    if in_job_command and (array or profile.jobs_count() > 1):
        raise ProfileError(f"the controller runs inside one job that starts every engine, so "
                           f"job_shape = {profile.job_shape!r} does not apply; set job_shape = "
                           "'one-job' or leave out --controller-in-job")
    counts = [n] if array else split_engines(n, profile.jobs_count())
    planned = []
    for k, engines in enumerate(counts, start=first_index):
        token = kind.output_array_token if array else kind.output_job_token
        name = "controller" if in_job_command else f"job-{k}"
        output = os.path.join(logs, f"{name}-{token}.out")
        context = job_context(profile, kind, engines, array, output, engine_argv, n, k)
        context["in_job_command"] = in_job_command
        script = os.path.join(jobs_dir, "controller.sh" if in_job_command
                              else f"engines-{k}.sh")
        text = skip_directives(render_template(template, context), kind.directive_prefix,
                               profile.skip_directives)
        planned.append(JobScript(script, text, submit_shell(kind, script), engines,
                                 n if array else 0, output))
    return planned


def job_context(profile, kind, engines, array, output, engine_argv, total, index):
    """The variables a template sees (every profile field, plus what they imply)."""
    context = profile.to_dict()
    cpus = profile.cpus_per_engine or 1
    per_node = profile.engines_per_node
    nodes = profile.nodes if profile.nodes and not array else (
        -(-engines // per_node) if per_node and not array else None)
    memory = parse_memory(profile.memory_per_engine) if profile.memory_per_engine else None
    context.update(
        engines=1 if array else engines, array_size=engines if array else 0,
        total_engines=total, job_index=index, nodes=nodes, cpus_per_engine=cpus,
        fanout=profile.effective_fanout, output=output,
        walltime_seconds=parse_walltime(profile.walltime),
        drain_margin_seconds=profile.drain_margin_seconds(),
        memory=kind.format_memory(memory) if memory else None,
        memory_per_cpu=kind.format_memory(-(-memory // cpus)) if memory else None,
        memory_per_node=kind.format_memory(memory * per_node) if memory and per_node else None,
        engine_command=shlex.join(engine_argv),
        mpiexec_command=shlex.join(kind.mpiexec_argv(profile, engines)),
        ssh_command=ssh_command(profile), node_list_command=kind.node_list_command,
        huge_pages_line=HUGE_PAGES_SHELL_LINE)
    return context


def render_template(path, context):
    """Render one template strictly: a missing field is an error naming it and the line.

    Partials (``_jobend.sh.j2``, ``ssh-fanout.sh.j2``) are found next to the template, then
    among the shipped templates, so a profile's own template can use them too."""
    shipped = find_data_dir("templates", TEMPLATE_ENV)
    search = [os.path.dirname(path)] + ([shipped] if shipped else [])
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(search),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             trim_blocks=True, lstrip_blocks=True, autoescape=False)
    try:
        return env.get_template(os.path.basename(path)).render(context)
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(f"{e.filename or path}, line {e.lineno}: {e.message} (a bash "
                            "'${#' or '{%' must be written as {{ '${#' }} inside a template)"
                            ) from None
    except jinja2.UndefinedError as e:
        line = _template_line(e.__traceback__, path)
        field = re.search(r"'([^']+)' is undefined", str(e))
        what = f"field {field.group(1)!r} is not defined" if field else str(e)
        raise TemplateError(f"{path}, line {line}: {what}; fields a template can use: "
                            f"{', '.join(sorted(context))}") from None
    except jinja2.TemplateError as e:
        raise TemplateError(f"{path}, line {_template_line(e.__traceback__, path)}: {e}") from None


def skip_directives(text, prefix, skipped):
    """Drop directive lines naming a skipped option: '--mem-per-cpu', '-A', or '-l h_vmem'
    (an option with the resource it sets, for schedulers that put many under one flag)."""
    if not skipped:
        return text
    kept = []
    for line in text.splitlines(keepends=True):
        if line.startswith(prefix + " "):
            words = re.split(r"[\s=]+", line[len(prefix):].strip())
            if words[0] in skipped or " ".join(words[:2]) in skipped:
                continue
        kept.append(line)
    return "".join(kept)


def _template_line(tb, path):
    """The template line a jinja2 error came from (jinja2 rewrites frames to it)."""
    line = "?"
    while tb is not None:
        if os.path.abspath(tb.tb_frame.f_code.co_filename) == os.path.abspath(path):
            line = tb.tb_lineno
        tb = tb.tb_next
    return line
