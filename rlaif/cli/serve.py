"""``rlaif serve``: the direct scorer and the pairwise labeler as an HTTP reward service for RL training."""

from __future__ import annotations

import argparse
import sys

from rlaif.cli.engines import add_engine_options, build_backend, describe


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from rlaif.serving.app import create_app
    except ImportError as exc:
        raise SystemExit(f"error: rlaif serve needs the serve extra: pip install 'rlaif[serve]' ({exc})") from None
    from rlaif.serving.batching import BatchWorker
    from rlaif.serving.scoring import RewardService
    from rlaif.templates import PromptTemplate

    if min(args.max_batch, args.max_queue, args.max_chars) < 1:
        raise SystemExit("error: --max-batch, --max-queue and --max-chars must be at least 1")
    template = PromptTemplate(args.task, args.preamble, args.templates)
    backend = build_backend(args)
    worker = BatchWorker(lambda: RewardService(backend, template, chat_template=args.chat_template, cache=args.cache),
                         max_batch=args.max_batch, max_queue=args.max_queue)
    worker.start()  # a template without score templates, or an unusable cache file, fails here
    print(f"{describe(backend)}; template: {template.name}; chat template: {args.chat_template}; "
          f"cache: {args.cache or 'off'}; serving POST /get_reward, POST /pairwise, GET /health on "
          f"http://{args.host}:{args.port}", file=sys.stderr)
    try:
        uvicorn.run(create_app(worker, max_chars=args.max_chars), host=args.host, port=args.port,
                    log_level=args.log_level)
    finally:
        worker.stop()
    return 0


def add_commands(commands) -> None:
    serve = commands.add_parser("serve", help="serve direct 1-10 rewards (OpenRLHF's /get_reward) and pairwise "
                                              "labels over HTTP, for RL training")
    serve.add_argument("--task", required=True,
                       help="template task whose score and pairwise templates are used (see `rlaif templates`)")
    serve.add_argument("--preamble", default="base", help="preamble name (base, detailed, principle_1, ...)")
    serve.add_argument("--templates", help="folder of your own task templates (default: the shipped ones)")
    chat = serve.add_mutually_exclusive_group()
    chat.add_argument("--chat-template", dest="chat_template", action="store_true", default=True,
                      help="wrap the prompt in the model's chat template (default)")
    chat.add_argument("--no-chat-template", dest="chat_template", action="store_false",
                      help="send the prompt as plain text")
    add_engine_options(serve)
    server = serve.add_argument_group("server")
    server.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    server.add_argument("--port", type=int, default=8000)
    server.add_argument("--cache", help="score cache file (SQLite): a prompt scored before is answered from disk")
    server.add_argument("--max-batch", type=int, default=64,
                        help="most prompts per backend call; waiting requests are batched up to it "
                             "(a pair counts 2: both orders)")
    server.add_argument("--max-queue", type=int, default=256,
                        help="most requests waiting; beyond it requests get 429 with Retry-After")
    server.add_argument("--max-chars", type=int, default=100_000, help="longest text accepted, in characters")
    server.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                        help="uvicorn's log level (info logs every request)")
    serve.set_defaults(func=cmd_serve, seed=0)  # build_backend passes a seed to vLLM; nothing here samples
