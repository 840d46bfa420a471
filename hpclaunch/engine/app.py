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
    parser.add_argument("--requested-id", type=_non_negative_int, metavar="N",
                        help="ask the controller for this engine id (it may refuse)")
    return parser


def connection_file_path(args):
    """The connection file the arguments point at."""
    if args.file:
        return args.file
    return engine_file(profile_dir(args.profile, args.profile_dir))


def main(argv=None):
    """Run an engine until it is shut down; returns the exit code."""
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    path = connection_file_path(args)
    try:
        info = read_connection_file(path)
    except ConnectionFileError as e:
        logger.error("%s", e)
        return 1
    from .engine import Engine  # after argument errors, so --help stays instant

    logger.debug("connection file %s: controller at %s", path, info["url"])
    try:
        engine = Engine(info["url"], info["key"], timeout=args.timeout,
                        requested_id=args.requested_id, curve=info.get("curve"))
    except Exception as e:  # e.g. a malformed url in the connection file
        logger.error("cannot connect to %r from %s: %s", info.get("url"), path, e)
        return 1
    return engine.run()


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0 seconds")
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
