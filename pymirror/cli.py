"""The command line: `pymirror run | check | demo | top`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence

import trio

from pymirror import __version__
from pymirror.admin import DEFAULT_ADDRESS as DEFAULT_ADMIN
from pymirror.check import run_check
from pymirror.config import ConfigError
from pymirror.control import read_token
from pymirror.engine import ServerOptions
from pymirror.errors import PymirrorError
from pymirror.lifecycle import COMPARE_MAX_PER_SECOND, DEFAULT_DRAIN_SECONDS, Supervisor
from pymirror.logs import FORMATS
from pymirror.logs import configure as configure_logging
from pymirror.tls_files import DEFAULT_POLL_SECONDS


def _mebibytes(text: str) -> int:
    """A whole number of MiB, at least 1, as bytes."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of MiB, got {text!r}") from None
    if not 1 <= value <= 1 << 20:
        raise argparse.ArgumentTypeError(f"expected 1 to {1 << 20} MiB, got {value}")
    return value << 20


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
    parser.add_argument(
        "--log-format",
        default="text",
        choices=FORMATS,
        help="text: readable lines; json: one JSON object per line (default: text)",
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
    run.add_argument(
        "--admin",
        metavar="HOST:PORT",
        help=f"serve /metrics, /healthz, /readyz, /config, /stats here (overrides the file's "
        f"admin.address; default {DEFAULT_ADMIN}; port 0 picks one)",
    )
    run.add_argument(
        "--access-log",
        metavar="PATH|-",
        help="write one JSON line per request and per mirror copy to PATH, or - for stdout",
    )
    run.add_argument(
        "--admin-token-file",
        metavar="PATH",
        help="runtime control on the admin endpoint (POST /runtime/...) asks for "
        "`Authorization: Bearer` this file's token; required off loopback, with TLS",
    )
    run.add_argument(
        "--admin-tls-cert",
        metavar="PATH",
        help="serve the admin endpoint over TLS with this certificate chain (PEM)",
    )
    run.add_argument("--admin-tls-key", metavar="PATH", help="the key of --admin-tls-cert (PEM)")
    run.add_argument(
        "--access-log-fields",
        metavar="FIELD,...",
        type=lambda text: tuple(f.strip() for f in text.split(",") if f.strip()),
        help="keep only these fields in each access-log line (default: all; README lists them)",
    )
    # Also accepted after `run`, where users reach for it; the top-level one is the default.
    run.add_argument(
        "--log-format", choices=FORMATS, default=argparse.SUPPRESS, help="as before the command"
    )
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
        "--reuse-port",
        action="store_true",
        help="serve addresses another process serves too, the kernel splitting new "
        "connections between them (to start a new pymirror before stopping the old one); "
        "without it such an address is refused",
    )
    run.add_argument(
        "--shutdown-delay",
        type=float,
        default=None,
        metavar="SECONDS",
        help="on SIGTERM, answer /readyz 503 at once but keep serving this long before the "
        "drain, so that traffic moves elsewhere first (default: 5 in a Kubernetes pod, "
        "where KUBERNETES_SERVICE_HOST is set; else 0)",
    )
    run.add_argument(
        "--compare-max-rate",
        type=int,
        default=COMPARE_MAX_PER_SECOND,
        metavar="PAIRS",
        help="compared answers diffed per second at most; the rest are skipped and counted "
        "(default: %(default)d)",
    )
    run.add_argument(
        "--tls-poll-interval",
        type=float,
        default=DEFAULT_POLL_SECONDS,
        metavar="SECONDS",
        help="how often the TLS certificate and key files are checked for new content, "
        "reloaded when it changes (Kubernetes swaps secret mounts whole); 0: only on SIGHUP "
        "(default: %(default)g)",
    )
    run.add_argument(
        "--header-read-timeout",
        type=float,
        default=ServerOptions.header_read_timeout,
        metavar="SECONDS",
        help="time a client has to finish a request head once begun, or a TLS handshake "
        "(default: %(default)g)",
    )

    run.add_argument(
        "--mirror-buffer-budget",
        type=_mebibytes,
        default=ServerOptions.mirror_buffer_budget,
        metavar="MIB",
        help="MiB queued for all mirrors together (copies' bodies, tcp and upgraded "
        "sessions' mirror buffers); past it a copy or mirror connection is cut and counted "
        f"(default: {ServerOptions.mirror_buffer_budget >> 20})",
    )

    run.add_argument(
        "--compare-buffer-budget",
        type=_mebibytes,
        default=ServerOptions.compare_buffer_budget,
        metavar="MIB",
        help="MiB that compared answers may hold together until compared; past it a pair "
        f"is skipped and counted (default: {ServerOptions.compare_buffer_budget >> 20})",
    )

    check = commands.add_parser("check", help="validate configuration and print what would run")
    check.add_argument("files", nargs="+", metavar="FILE", help="config files or folders")
    check.add_argument("--listen", action="append", metavar="HOST:PORT")
    check.add_argument(
        "--strict", action="store_true", help="exit 1 on warnings too (for CI gates)"
    )
    check.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text: one block per virtual service; json: the same for machines (default: text)",
    )

    demo = commands.add_parser("demo", help="run the reviews v1/v2 demo on built-in backends")
    demo.add_argument("--requests", type=int, default=1500, help="requests to send (default: 1500)")
    demo.add_argument("--concurrency", type=int, default=8, help="client connections (default: 8)")

    top = commands.add_parser("top", help="live view of a running pymirror (polls its /stats)")
    top.add_argument(
        "--admin",
        default=DEFAULT_ADMIN,
        metavar="HOST:PORT",
        help="the admin endpoint to poll (default: %(default)s)",
    )
    top.add_argument(
        "--interval",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="refresh period (default: %(default)g)",
    )
    rep = commands.add_parser(
        "report", help="how the mirror's answers compare with the primary's (reads /compare)"
    )
    rep.add_argument(
        "--admin",
        default=DEFAULT_ADMIN,
        metavar="HOST:PORT",
        help="the admin endpoint of a running pymirror (default: %(default)s)",
    )
    rep.add_argument(
        "--format",
        choices=("text", "json", "html"),
        default="text",
        help="text: one block per endpoint; json: the /compare document; html: a page with "
        "charts, no script, works offline (also served at the admin /report) (default: text)",
    )
    return parser


def _report(args: argparse.Namespace) -> int:
    import json
    import urllib.error
    import urllib.request

    from pymirror.compare.report import render_text

    url = f"http://{args.admin}/compare"
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            doc = json.load(answer)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"pymirror: cannot read {url}: {exc}", file=sys.stderr)
        return 1
    if args.format == "json":
        print(json.dumps(doc, indent=1))
    elif args.format == "html":
        from pymirror.compare.html import render_html

        sys.stdout.write(render_html(doc))
    else:
        sys.stdout.write(render_text(doc))
    return 0


def _run(args: argparse.Namespace) -> int:
    if (args.admin_tls_cert is None) != (args.admin_tls_key is None):
        raise PymirrorError("--admin-tls-cert and --admin-tls-key go together")
    tls = (args.admin_tls_cert, args.admin_tls_key) if args.admin_tls_cert else None
    token = read_token(args.admin_token_file) if args.admin_token_file else None
    options = ServerOptions(
        worker_threads=max(0, args.workers),
        header_read_timeout=args.header_read_timeout,
        access_log=args.access_log,
        access_log_fields=args.access_log_fields,
        mirror_buffer_budget=args.mirror_buffer_budget,
        compare_buffer_budget=args.compare_buffer_budget,
        reuse_port=args.reuse_port,
    )
    supervisor = Supervisor(
        args.files,
        listen=args.listen,
        options=options,
        drain=args.drain_timeout,
        admin=args.admin,
        compare_max_per_second=max(1, args.compare_max_rate),
        tls_poll=max(0.0, args.tls_poll_interval),
        shutdown_delay=shutdown_delay(args.shutdown_delay, os.environ),
        admin_token=token,
        admin_tls=tls,
    )
    exit_code: int = trio.run(supervisor.run)
    return exit_code


#: The shutdown delay in a Kubernetes pod unless told: endpoints controllers and kube-proxy
#: take a few seconds to stop routing to a terminating pod.
KUBERNETES_SHUTDOWN_DELAY = 5.0


def shutdown_delay(given: float | None, environ: Mapping[str, str]) -> float:
    """`--shutdown-delay` as given, else 5 s in a Kubernetes pod (KUBERNETES_SERVICE_HOST
    set), else 0."""
    if given is not None:
        return max(0.0, given)
    return KUBERNETES_SHUTDOWN_DELAY if environ.get("KUBERNETES_SERVICE_HOST") else 0.0


def _check(args: argparse.Namespace) -> int:
    return run_check(
        args.files,
        listen=args.listen,
        fmt=args.format,
        strict=args.strict,
        out=sys.stdout,
        err=sys.stderr,
    )


def _demo(args: argparse.Namespace) -> int:
    from pymirror.demo import run_demo  # rich is only needed here

    return run_demo(requests=args.requests, concurrency=args.concurrency)


def _top(args: argparse.Namespace) -> int:
    from pymirror.top import run_top  # rich is only needed here

    return run_top(args.admin, interval=args.interval)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    command = {"run": _run, "check": _check, "demo": _demo, "top": _top, "report": _report}[
        args.command
    ]
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
