"""Command line: ``rlaif label``, ``merge``, ``report``, ``compare``, ``export``, ``browse``, ``serve``,
``templates``, ``models``.

One module per group of commands, each adding its subcommands with ``add_commands``; ``main`` turns the
errors a user can fix (bad data, bad template, missing file) into one line and exit status 2.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from rlaif.cli import catalogue, label, labels_files, run_config, serve


class Stopped(BaseException):
    """SIGTERM, which schedulers (Slurm, Kubernetes) send before they kill a job: raised where the run is,
    as Ctrl-C raises KeyboardInterrupt, so the output lock and open files are released on the way out."""


def _raise_stopped(signum, frame):
    raise Stopped()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlaif", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for group in (label, labels_files, serve, catalogue):
        group.add_commands(commands)
    parser.commands = commands.choices  # name -> the command's parser, for --config
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    config = run_config.config_path(argv)
    if config and argv and argv[0] in parser.commands:
        command = parser.commands[argv[0]]
        if not run_config.takes_config(command):
            parser.error(f"rlaif {argv[0]} takes no --config")
        run_config.apply_config(command, config)
    args = parser.parse_args(argv)
    from rlaif.pairs import DataError
    from rlaif.templates import TemplateError

    in_main_thread = threading.current_thread() is threading.main_thread()  # signal handlers live there
    previous = signal.signal(signal.SIGTERM, _raise_stopped) if in_main_thread else None
    try:
        return args.func(args)
    except (KeyboardInterrupt, Stopped) as stop:
        by, code = ("SIGINT", 130) if isinstance(stop, KeyboardInterrupt) else ("SIGTERM", 143)
        where = f" in {args.out}" if getattr(args, "out", None) else ""
        print(f"stopped by {by}: every finished step is saved{where} and the step in flight was dropped; "
              "run the same command again to resume", file=sys.stderr)
        return code
    except (DataError, TemplateError, FileNotFoundError, ValueError, RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
