"""The command line: `pymirror run | check | demo`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import trio

from pymirror import __version__
from pymirror.config import ConfigError, load_config
from pymirror.engine import ServerOptions, validate
from pymirror.errors import PymirrorError
from pymirror.lifecycle import DEFAULT_DRAIN_SECONDS, Supervisor
from pymirror.resolve import build_snapshot, describe


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pymirror",
        description="A traffic-shadowing proxy: every request is served by the primary; "
        "a sampled copy goes to a mirror whose answer is dropped.",
    )
    parser.add_argument("--version", action="version", version=f"pymirror {__version__}")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log verbosity (default: info)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="serve a configuration until SIGINT/SIGTERM")
    run.add_argument("files", nargs="+", metavar="FILE", help="config files or folders")
    run.add_argument(
        "--listen",
        action="append",
        metavar="HOST:PORT",
        help="listen here instead of the file's listeners (repeatable; port 0 picks one)",
    )
    run.add_argument("--admin", metavar="HOST:PORT", help="admin address (overrides the file)")
    run.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help="data-plane threads (default: one per core)",
    )
    run.add_argument(
        "--drain-timeout",
        type=float,
        default=DEFAULT_DRAIN_SECONDS,
        metavar="SECONDS",
        help="how long in-flight requests may finish on shutdown (default: %(default)g)",
    )
    run.add_argument(
        "--header-read-timeout",
        type=float,
        default=ServerOptions.header_read_timeout,
        metavar="SECONDS",
        help="time a client has to send a request head (default: %(default)g)",
    )

    check = commands.add_parser("check", help="validate configuration and print what would run")
    check.add_argument("files", nargs="+", metavar="FILE", help="config files or folders")
    check.add_argument("--listen", action="append", metavar="HOST:PORT")

    demo = commands.add_parser("demo", help="run the reviews v1/v2 demo on built-in backends")
    demo.add_argument("--requests", type=int, default=1500, help="requests to send (default: 1500)")
    demo.add_argument("--concurrency", type=int, default=8, help="client connections (default: 8)")
    return parser


def _run(args: argparse.Namespace) -> int:
    if args.admin:
        logging.getLogger("pymirror").warning(
            "--admin %s: the admin endpoint is not served by this version yet", args.admin
        )
    options = ServerOptions(
        worker_threads=max(0, args.workers), header_read_timeout=args.header_read_timeout
    )
    supervisor = Supervisor(
        args.files, listen=args.listen, options=options, drain=args.drain_timeout
    )
    exit_code: int = trio.run(supervisor.run)
    return exit_code


def _check(args: argparse.Namespace) -> int:
    config = load_config(*args.files)
    snapshot = build_snapshot(config, listen=args.listen)
    validate(snapshot)
    for line in describe(config, listen=args.listen):
        print(line)
    print(f"ok: config version {snapshot['version']}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from pymirror.demo import run_demo  # rich is only needed here

    return run_demo(requests=args.requests, concurrency=args.concurrency)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)-7s %(message)s",
        stream=sys.stderr,
    )
    command = {"run": _run, "check": _check, "demo": _demo}[args.command]
    try:
        return command(args)
    except ConfigError as exc:
        print(f"pymirror: configuration error\n{exc}", file=sys.stderr)
        return 1
    except PymirrorError as exc:
        print(f"pymirror: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
