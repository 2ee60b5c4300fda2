"""The `gravixd` command line: argument parsing and subcommands, nothing else.

Nothing imports this module; it imports the rest lazily, so `gravixd config` or
`gravixd emit` never pay for starting the daemon's machinery.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

from . import __version__, config
from .errors import ConfigError

# The settings `gravixd spool check` reads (with --config and the environment).
SPOOL_CHECK_KEYS = ("spool_dir",)


def _load(args: argparse.Namespace) -> config.LoadedConfig:
    return config.load(vars(args), os.environ)


def _serve(args: argparse.Namespace) -> int:
    from .logs import setup_logging
    from .runtime.app import serve

    loaded = _load(args)
    setup_logging(loaded.config.log_level, loaded.config.log_format)
    return serve(loaded, vars(args), os.environ)


def _config(args: argparse.Namespace) -> int:
    from .runtime.app import select_protobuf_decoder

    loaded = _load(args)
    print(config.render(loaded, args.format))
    if args.format == "text":
        print(f"\nprotobuf decoder: {select_protobuf_decoder(loaded.config)[1]}")
    return 0


def _spool_check(args: argparse.Namespace) -> int:
    from .spool_check import check_spool

    loaded = _load(args)
    return check_spool(loaded.config.spool_dir, args.format)


def _emit(args: argparse.Namespace) -> int:
    from . import emit

    return emit.main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gravixd", description="High-throughput ingestion daemon."
    )
    parser.add_argument("--version", action="version", version=f"gravixd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the daemon")
    config.add_arguments(serve)
    serve.set_defaults(run=_serve)

    show = commands.add_parser("config", help="print the effective configuration and its sources")
    config.add_arguments(show)
    show.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="a table of key, source and value, or one JSON object (default text)",
    )
    show.set_defaults(run=_config)

    spool = commands.add_parser("spool", help="inspect the local spool")
    spool_commands = spool.add_subparsers(dest="spool_command", required=True, metavar="ACTION")
    check = spool_commands.add_parser("check", help="report the spool's state without changing it")
    # Only what it reads: the spool's place (the daemon's other settings do not matter here).
    config.add_arguments(check, keys=SPOOL_CHECK_KEYS)
    check.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="a readable report, or one JSON object (default text)",
    )
    check.set_defaults(run=_spool_check)

    emit = commands.add_parser("emit", help="send generated or file events over HTTP or TCP")
    try:
        from . import emit as emit_module
    except ImportError:
        emit_module = None  # type: ignore[assignment]
    if emit_module is not None:
        emit_module.add_arguments(emit)
    emit.set_defaults(run=_emit)

    # Listed for --help; main() hands `rollup ...` to gravixd.rollup before parsing.
    commands.add_parser("rollup", help="compact an hour's segments into large Parquet files")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    except BrokenPipeError:
        # `gravixd config | head`: the reader left. Exit quietly, as CLIs do on SIGPIPE,
        # and point stdout at /dev/null so that the interpreter's final flush is quiet too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def _main(argv: list[str]) -> int:
    if argv[:1] == ["rollup"]:
        # rollup parses its own flags (and --help) in gravixd.rollup.cli.
        from .rollup.cli import main as rollup_main

        return rollup_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = int(args.run(args))
        sys.stdout.flush()  # a closed pipe shows here, inside the handler above
        return code
    except ConfigError as exc:
        print(f"gravixd: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
