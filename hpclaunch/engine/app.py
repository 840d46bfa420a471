"""Command line of the engine: ``python -m hpclaunch.engine``.

argparse, not click: thousands of engines start at once on a cluster, so the
engine imports only the stdlib, zmq and cloudpickle. The click CLI calls
:func:`main` with its own argv.
"""

import argparse
import sys

from ..error import ConnectionFileError
from ..protocol import read_connection_file
from ..protocol.paths import engine_file, profile_dir
from .logs import logger, setup_logging

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m hpclaunch.engine",
        description="Start one hpclaunch engine and connect it to a running controller.")
    where = parser.add_argument_group(
        "connection file (--file wins; else <profile dir>/security/engine.json)")
    where.add_argument("--file", metavar="ENGINE_JSON",
                       help="path of the controller's engine connection file")
    where.add_argument("--profile", metavar="NAME", help="profile name (default: 'default')")
    where.add_argument("--profile-dir", metavar="DIR", help="profile directory (wins over --profile)")
    parser.add_argument("--timeout", type=_positive_float, default=30.0, metavar="SECONDS",
                        help="give up registering after this long; exit when the controller's "
                             "heartbeat has been silent this long (default: 30)")
    parser.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, default="INFO",
                        help="logging level on stderr (default: INFO)")
    parser.add_argument("--drain-at", type=_epoch_seconds, metavar="EPOCH",
                        help="at this time (epoch seconds) finish the running task, give the "
                             "queued ones back to the controller, unregister and exit 0; job "
                             "templates pass it a margin before the batch job's walltime ends")
    parser.add_argument("--requested-id", type=_non_negative_int, metavar="N",
                        help="ask the controller for this engine id (it may refuse)")
    mpi = parser.add_argument_group(
        "MPI (automatic when mpiexec or srun --mpi=pmi2 started the engine; needs hpclaunch[mpi])")
    mpi.add_argument("--mpi", action="store_true",
                     help="initialise MPI and report rank and size even without a launcher's "
                          "rank variable (OMPI_COMM_WORLD_RANK, PMI_RANK, PMIX_RANK)")
    mpi.add_argument("--ids-follow-ranks", action="store_true",
                     help="ask for engine id = MPI rank (implies --mpi)")
    ssh = parser.add_argument_group(
        "SSH tunnel (for engines that cannot reach the controller directly)")
    ssh.add_argument("--engine-ssh", metavar="USER@HOST[:PORT]",
                     help="connect through one SSH tunnel via this server")
    ssh.add_argument("--engine-ssh-key", metavar="FILE", help="private key file for --engine-ssh")
    ssh.add_argument("--engine-ssh-backend", choices=("auto", "openssh", "paramiko"),
                     default="auto", help="auto: OpenSSH if ssh is on PATH, else paramiko")
    return parser


def open_engine_tunnel(args, url):
    """One SSH tunnel for ``--engine-ssh``; imported only then, so engines stay light."""
    from ..tunnel import open_tunnel

    paramiko = {"auto": None, "openssh": False, "paramiko": True}[args.engine_ssh_backend]
    tunnel = open_tunnel(url, args.engine_ssh, sshkey=args.engine_ssh_key, paramiko=paramiko,
                         timeout=args.timeout)
    logger.info("connecting to %s through SSH %s (%s backend)", url, tunnel.server, tunnel.backend)
    # a dropped tunnel silences the controller's heartbeat: the engine then exits on its own
    tunnel.on_drop(lambda exc: logger.error("%s", exc))
    return tunnel


def connection_file_path(args):
    """The connection file the arguments point at."""
    if args.file:
        return args.file
    return engine_file(profile_dir(args.profile, args.profile_dir))


def main(argv=None):
    """Run an engine until it is shut down; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.ids_follow_ranks and args.requested_id is not None:
        parser.error("--requested-id and --ids-follow-ranks both choose the engine id: "
                     "give only one")
    setup_logging(args.log_level)
    path = connection_file_path(args)
    try:
        info = read_connection_file(path)
    except ConnectionFileError as e:
        logger.error("%s", e)
        return 1
    from .engine import Engine  # after argument errors, so --help stays instant
    from .mpi import MPIUnavailable, should_use_mpi  # mpi4py itself: only if MPI is used

    engine_class, engine_options = Engine, {"requested_id": args.requested_id}
    if should_use_mpi(args.mpi or args.ids_follow_ranks):
        try:
            engine_class, engine_options = mpi_engine_choice(args)
        except MPIUnavailable as e:
            logger.error("%s", e)
            return 1
    logger.debug("connection file %s: controller at %s", path, info["url"])
    url, tunnel = info["url"], None
    if args.engine_ssh:
        from ..error import TunnelError

        try:
            tunnel = open_engine_tunnel(args, url)
        except TunnelError as e:
            logger.error("%s", e)
            return 1
        url = tunnel.url
    try:
        try:
            engine = engine_class(url, info["key"], timeout=args.timeout,
                                  curve=info.get("curve"), drain_at=args.drain_at,
                                  direct=not args.engine_ssh, **engine_options)
        except Exception as e:  # e.g. a malformed url in the connection file
            logger.error("cannot connect to %r from %s: %s", info.get("url"), path, e)
            return 1
        return engine.run()
    finally:
        if tunnel is not None:
            tunnel.close()


def mpi_engine_choice(args):
    """The engine class and options of an MPI engine (initialises MPI)."""
    from .engine import Engine
    from .mpi import mpi_engine_settings

    requested_id, mpi_info = mpi_engine_settings(args.requested_id, args.ids_follow_ranks)
    return Engine, {"requested_id": requested_id, "info": mpi_info}


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0 seconds")
    return value


def _epoch_seconds(text):
    """A drain time: seconds since 1970 (what `date +%s` prints), e.g. 1795000000."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time in epoch seconds (e.g. $(date +%s)); an empty value "
            "means the job template did not set HPCLAUNCH_DRAIN_AT") from None
    if not 0 < value < 1e11:
        raise argparse.ArgumentTypeError(f"{text!r} is not a time in epoch seconds "
                                         "(seconds since 1970, as `date +%s` prints)")
    return value


def _non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


if __name__ == "__main__":
    sys.exit(main())
