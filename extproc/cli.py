"""The `llm-extproc` command: serve, dev, check, mock-upstream."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from extproc import pipeline as pipeline_module
from extproc.config import ConfigError
from extproc.loader import HandlerError
from extproc.pipeline import Pipeline


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )


def _load(path: str) -> Pipeline:
    pipeline = pipeline_module.load(path)
    for warning in pipeline.config.warnings:
        logging.getLogger("extproc.config").warning("%s: %s", pipeline.config.path, warning)
    return pipeline


def _describe(pipeline: Pipeline) -> str:
    chain = pipeline.chain
    lines = [f"config: {pipeline.config.path}"]
    for handler in chain.handlers:
        kinds = [
            hook.kind.value
            for hooks in chain.hooks.values()
            for hook in hooks
            if hook.label.startswith(handler.reference + ".")
        ]
        lines.append(f"handler {handler.reference}: {', '.join(kinds) or 'no hooks'}")
    mode = pipeline.request_mode
    phases = ["request_headers"] if pipeline.needs_sidecar else []
    if mode.request_body.value:
        phases.append("request_body")
    if mode.response_headers:
        phases.append("response_headers")
    lines.append(f"enforce_user_param: {str(pipeline.config.enforce_user_param).lower()}")
    lines.append(f"phases asked of Envoy: {', '.join(phases) or 'none (LLM routes bypass the sidecar)'}")
    return "\n".join(lines)


def cmd_check(args: argparse.Namespace) -> int:
    pipeline = _load(args.config)
    for warning in pipeline.config.warnings:
        print(f"warning: {warning}")
    print(_describe(pipeline))
    print("ok")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from extproc.server import serve

    pipeline = _load(args.config)
    _setup_logging(pipeline.config.sidecar.log_level)
    listen = tuple(args.listen) if args.listen else pipeline.config.sidecar.listen
    asyncio.run(serve(pipeline, listen))
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    from extproc.dev import run

    return run(args.config, port=args.port, upstream=args.upstream)


def cmd_envoy_config(args: argparse.Namespace) -> int:
    from extproc import envoy_config

    pipeline = _load(args.config)
    sidecar = args.sidecar or pipeline.config.sidecar.listen[0]
    try:
        bootstrap = envoy_config.bootstrap(
            pipeline,
            listen_port=args.port,
            admin_port=args.admin_port,
            sidecar=sidecar,
            upstream=args.upstream,
            listen_address=args.listen_address,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(envoy_config.render(bootstrap))
    return 0


def cmd_mock_upstream(args: argparse.Namespace) -> int:
    try:
        from extproc.mock_upstream import main as mock_main
    except ImportError as exc:
        print(
            f"error: the mock upstream needs the dev extra (pip install 'llm-extproc[dev]'): {exc}",
            file=sys.stderr,
        )
        return 2
    mock_main(host=args.host, port=args.port)
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="llm-extproc", description="LiteLLM-compatible call hooks for Envoy")
    commands = root.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the ext_proc sidecar")
    serve.add_argument("--config", required=True)
    serve.add_argument(
        "--listen",
        action="append",
        metavar="ADDR",
        help="host:port or unix:/path (repeatable; overrides extproc.listen)",
    )
    serve.set_defaults(func=cmd_serve)

    dev = commands.add_parser("dev", help="run Envoy + the sidecar + the mock upstream on localhost")
    dev.add_argument("--config", required=True)
    dev.add_argument("--port", type=int, default=10000)
    dev.add_argument("--upstream", default=None, help="upstream base URL (default: the built-in mock)")
    dev.set_defaults(func=cmd_dev)

    check = commands.add_parser("check", help="load and validate a config and its handlers")
    check.add_argument("--config", required=True)
    check.set_defaults(func=cmd_check)

    envoy = commands.add_parser("envoy-config", help="print the Envoy bootstrap this config needs")
    envoy.add_argument("--config", required=True)
    envoy.add_argument("--port", type=int, default=10000, help="Envoy's listener port")
    envoy.add_argument("--listen-address", default="0.0.0.0")
    envoy.add_argument("--admin-port", type=int, default=9901)
    envoy.add_argument("--sidecar", default=None, help="the sidecar's address (default: extproc.listen[0])")
    envoy.add_argument("--upstream", default="http://127.0.0.1:8000", help="upstream base URL")
    envoy.set_defaults(func=cmd_envoy_config)

    mock = commands.add_parser("mock-upstream", help="run the mock OpenAI upstream")
    mock.add_argument("--port", type=int, default=8000)
    mock.add_argument("--host", default="127.0.0.1")
    mock.set_defaults(func=cmd_mock_upstream)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, HandlerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
