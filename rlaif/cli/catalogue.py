"""What ships and what is installed: ``rlaif templates`` and ``rlaif models``."""

from __future__ import annotations

import argparse
import sys

from rlaif.backends.models import DEFAULT_MODEL


def cmd_templates(args: argparse.Namespace) -> int:
    from rlaif.templates import PromptTemplate, list_tasks

    for task, description in list_tasks(args.templates).items():
        template = PromptTemplate(task, template_dir=args.templates)
        flip = " (asks which is MORE harmful; flipped)" if template.asks_more_harmful else ""
        print(f"{task:15s} labels {'/'.join(template.labels)}{flip}  {description}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    import subprocess

    from rlaif.backends.catalogue import CATALOGUE, pip_install_args
    from rlaif.backends.model_files import gguf_path

    if args.action == "install":
        if args.name not in CATALOGUE:
            raise SystemExit(f"error: unknown model {args.name!r}; known: {', '.join(CATALOGUE)}")
        entry = CATALOGUE[args.name]
        print("running:", " ".join(pip_install_args(entry)), file=sys.stderr)
        subprocess.run(pip_install_args(entry), check=True)
        print(f"{entry.name}: {gguf_path(entry)}")
        return 0
    print(f"{'name':20s} {'params':>6s} {'size':>9s}  installed  install with")
    for entry in CATALOGUE.values():
        installed = "yes" if entry.installed else "no"
        default = "  (default)" if entry.name == DEFAULT_MODEL else ""
        print(f"{entry.name:20s} {entry.parameters:>6s} {entry.size / 2**20:7.0f}MB  {installed:9s}  "
              f"{entry.install_command()}{default}")
    return 0


def add_commands(commands) -> None:
    templates = commands.add_parser("templates", help="list the labeling tasks and their templates")
    templates.add_argument("--templates", help="folder of your own task templates")
    templates.set_defaults(func=cmd_templates)
    models = commands.add_parser("models", help="the offline model catalogue: list, or install one")
    models.add_argument("action", nargs="?", default="list", choices=["list", "install"])
    models.add_argument("name", nargs="?", help="catalogue name, for install")
    models.set_defaults(func=cmd_models)

