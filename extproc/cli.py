"""The `llm-extproc` command: serve, dev, check, try, envoy-config, gateway-config, mock-upstream."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from extproc.devtools.envoy_version import version_warning
from extproc.errors import HandlerError
from extproc.hooks.source_checks import handler_call_type_warnings, uncalled_hook_warnings
from extproc.request import pipeline as pipeline_module
from extproc.request.modes import phases_asked
from extproc.request.pipeline import Pipeline
from extproc.settings.config import ConfigError, SidecarSettings
from extproc.settings.config import load as load_config
from extproc.settings.listen import ListenAddress
from extproc.telemetry.logs import setup_logging

# `serve`'s default log format; `dev` sets it for the sidecar it starts.
LOG_FORMAT_ENV = "LLM_EXTPROC_LOG_FORMAT"
USAGE_EXIT = 2


def _json_logs(args: argparse.Namespace) -> bool:
    return bool(args.log_format == "json")


def _load(path: str) -> Pipeline:
    pipeline = pipeline_module.load(path)
    for warning in _warnings(pipeline):
        logging.getLogger("extproc.config").warning("%s: %s", pipeline.config.path, warning)
    return pipeline


def _warnings(pipeline: Pipeline) -> list[str]:
    """The config's warnings, then what reading the handlers' files found."""
    chain = pipeline.chain
    instances = [handler.instance for handler in chain.handlers] + [g.instance for g in chain.guardrails]
    found = handler_call_type_warnings(instances, pipeline.config.sidecar.call_types)
    return [*pipeline.config.warnings, *found, *uncalled_hook_warnings(instances)]


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
    for guardrail in chain.guardrails:
        hooks = [
            hook.kind.value
            for hooks in chain.hooks.values()
            for hook in hooks
            if hook.label.startswith(guardrail.name + ".")
        ]
        entry = guardrail.entry
        how = "default_on" if entry.default_on else "when a request names it"
        unified = " (apply_guardrail)" if guardrail.unified is not None else ""
        lines.append(
            f"guardrail {guardrail.name} ({entry.guardrail}; mode {', '.join(guardrail.events)}; {how}): "
            f"{', '.join(hooks) or 'logging events only'}{unified}"
        )
    phases = phases_asked(pipeline.request_mode, pipeline.one_message)
    lines.append(f"enforce_user_param: {str(pipeline.config.enforce_user_param).lower()}")
    lines.append(f"phases asked of Envoy: {', '.join(phases) or 'none (LLM routes bypass the sidecar)'}")
    if pipeline.needs_sidecar:
        lines.append(_messages_line(pipeline))
    return "\n".join(lines)


def _messages_line(pipeline: Pipeline) -> str:
    """How many ext_proc messages a request takes, and why."""
    settings = pipeline.config.sidecar
    one, why = settings.messages_reason
    if not one:
        return f"messages per request: two, request headers then body ({why}); hooks see every header"
    listed = settings.forward_headers
    copied = "every request header" if listed is None else ", ".join(listed)
    return (
        f"messages per request: one, the body with the headers as Envoy metadata ({why}); hooks see {copied} "
        "(Istio and Envoy Gateway modes: two, their routes cannot name the endpoint)"
    )


def cmd_check(args: argparse.Namespace) -> int:
    """Load and validate; with `--strict` (for CI) any warning fails the check."""
    setup_logging("warning", _json_logs(args))
    pipeline = pipeline_module.load(args.config)
    if pipeline.config.sidecar.tracing_on:  # `serve` would refuse to start without OpenTelemetry
        from extproc.telemetry import tracing

        tracing.require()
    warnings = _warnings(pipeline)
    envoy_warning = version_warning()
    if envoy_warning is not None:
        warnings.append(envoy_warning)
    for note in pipeline.config.notes:
        print(f"note: {note}")
    for warning in warnings:
        print(f"warning: {warning}")
    print(_describe(pipeline))
    if args.strict and warnings:
        print(f"error: --strict: {len(warnings)} warning(s), listed above", file=sys.stderr)
        return 1
    print("ok")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    setup_logging("info", _json_logs(args))
    settings = load_config(args.config).sidecar
    if args.worker_index is None and settings.workers > 1:
        return _supervise(args, settings)
    from extproc.ops.server import serve

    pipeline = _load(args.config)
    setup_logging(pipeline.config.sidecar.log_level, _json_logs(args))
    interval = args.reload_interval if args.reload_interval > 0 else 0.0
    worker = args.worker_index or 0
    listen = [address.worker(worker) for address in args.listen or pipeline.config.sidecar.listen_addresses]
    runner = asyncio.run
    if args.loop == "uvloop":
        try:
            import uvloop

            runner = uvloop.run
        except ImportError:
            logging.getLogger("extproc.cli").warning("uvloop is not installed: using asyncio's event loop")
    runner(serve(pipeline, listen, interval, worker))
    return 0


def _supervise(args: argparse.Namespace, settings: SidecarSettings) -> int:
    """`serve` with several workers: check the handlers once in a child process (so this process never
    imports them and stays small), then run the workers."""
    from extproc.ops.workers import supervise

    setup_logging(settings.log_level, _json_logs(args))
    try:
        for address in args.listen or settings.listen_addresses:
            address.workers(settings.workers)
    except ValueError as exc:
        print(f"error: extproc.workers: {exc}", file=sys.stderr)
        return USAGE_EXIT
    check = [sys.executable, "-m", "extproc", "check", "--config", args.config]
    checked = subprocess.run(check, stdout=subprocess.DEVNULL, check=False)
    if checked.returncode != 0:
        return checked.returncode  # the child printed what is wrong
    return supervise(args.argv, settings.workers, settings.grace_seconds, settings.metrics_address)


def cmd_dev(args: argparse.Namespace) -> int:
    from extproc.devtools.dev import run

    setup_logging("warning", _json_logs(args))
    os.environ[LOG_FORMAT_ENV] = args.log_format  # the sidecar child logs as asked
    return run(args.config, port=args.port, upstream=args.upstream)


def _read(path: str, what: str) -> bytes | None:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        print(f"error: cannot read the {what} {path}: {exc.strerror or exc}", file=sys.stderr)
        return None


def cmd_try(args: argparse.Namespace) -> int:
    from extproc.devtools import trial

    setup_logging("warning", _json_logs(args))
    headers: dict[str, str] = {}
    for item in args.header or ():
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            print(f"error: --header {item!r}: expected NAME:VALUE", file=sys.stderr)
            return USAGE_EXIT
        headers[name.strip().lower()] = value.strip()
    body = _read(args.request, "request file")
    response = None if args.response is None else _read(args.response, "response file")
    if body is None or (args.response is not None and response is None):
        return USAGE_EXIT
    sse = response is not None and trial.is_sse(Path(args.response), response)
    report = asyncio.run(
        trial.run(
            args.config,
            body,
            path=args.path,
            headers=headers,
            response=response,
            sse=sse,
            response_status=args.response_status,
        )
    )
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False, default=str))
    else:
        print(trial.render(report))
    return int(report["exit_code"])


def cmd_envoy_config(args: argparse.Namespace) -> int:
    from extproc.envoy import admin_stats, envoy_config

    pipeline = _load(args.config)
    sidecar = args.sidecar or pipeline.config.sidecar.listen_addresses[0]
    try:
        bootstrap = envoy_config.bootstrap(
            pipeline,
            listen_port=args.port,
            admin_port=args.admin_port,
            sidecar=sidecar,
            upstream=args.upstream,
            listen_address=args.listen_address,
        )
        if args.stats_port is not None:
            bootstrap = admin_stats.add_stats_listener(bootstrap, args.stats_port)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(envoy_config.render(bootstrap))
    return 0


def cmd_gateway_config(args: argparse.Namespace) -> int:
    from extproc.envoy import gateway

    pipeline = _load(args.config)
    image = args.image or f"llm-extproc:{installed_version().split()[0]}"
    workload = gateway.Workload(args.service, args.namespace, args.port, image, args.replicas, args.configmap)
    try:
        target = gateway.Target(args.target_kind, args.target_name, args.section_name)
        docs = gateway.manifests(pipeline, target, workload, policy_only=args.policy_only)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USAGE_EXIT
    if pipeline.config.sidecar.failure_mode_allow:
        print(gateway.FAIL_OPEN_WARNING, file=sys.stderr)
    sys.stdout.write(gateway.render(docs))
    return 0


def cmd_mock_upstream(args: argparse.Namespace) -> int:
    try:
        from extproc.devtools.mock_upstream import main as mock_main
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
    root.add_argument("--version", action="version", version=f"llm-extproc {installed_version()}")
    commands = root.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the ext_proc sidecar")
    serve.add_argument("--config", required=True)
    serve.add_argument(
        "--listen",
        action="append",
        type=_listen_address,
        metavar="ADDR",
        help="host:port or unix:/path (repeatable; overrides extproc.listen)",
    )
    serve.add_argument(
        "--reload-interval",
        type=_seconds,
        default=1.0,
        metavar="SECONDS",
        help="how often to look for changed config or handler files (default 1; 0: only on SIGHUP)",
    )
    serve.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="uvloop",
        help="the event loop (default uvloop, ~10-15%% less CPU per request; asyncio if it is missing)",
    )
    serve.add_argument("--worker-index", type=_worker_index, default=None, help=argparse.SUPPRESS)
    _log_format(serve, os.environ.get(LOG_FORMAT_ENV, "json"))
    serve.set_defaults(func=cmd_serve)

    dev = commands.add_parser("dev", help="run Envoy + the sidecar + the mock upstream on localhost")
    dev.add_argument("--config", required=True)
    dev.add_argument("--port", type=int, default=10000)
    dev.add_argument("--upstream", default=None, help="upstream base URL (default: the built-in mock)")
    _log_format(dev, "text")
    dev.set_defaults(func=cmd_dev)

    check = commands.add_parser("check", help="load and validate a config and its handlers")
    check.add_argument("--config", required=True)
    check.add_argument("--strict", action="store_true", help="fail (exit 1) on any warning, for CI")
    _log_format(check, "text")
    check.set_defaults(func=cmd_check)

    attempt = commands.add_parser(
        "try",
        help="run the hooks on a saved request (and answer) without Envoy",
        description="Exit 0: the request goes through; 3: refused or failed; 1: config error; 2: usage.",
    )
    attempt.add_argument("--config", required=True)
    attempt.add_argument("request", help="the request body (JSON, or multipart starting with its boundary)")
    attempt.add_argument("--response", help="the upstream's answer: a JSON body, or an SSE stream (.sse)")
    attempt.add_argument("--response-status", type=int, default=200, help="the upstream's status")
    attempt.add_argument("--path", default="/v1/chat/completions")
    attempt.add_argument("--header", action="append", metavar="NAME:VALUE", help="a request header")
    attempt.add_argument("--json", action="store_true", help="print a JSON report")
    _log_format(attempt, "text")
    attempt.set_defaults(func=cmd_try)

    envoy = commands.add_parser("envoy-config", help="print the Envoy bootstrap this config needs")
    envoy.add_argument("--config", required=True)
    envoy.add_argument("--port", type=int, default=10000, help="Envoy's listener port")
    envoy.add_argument("--listen-address", default="0.0.0.0")
    envoy.add_argument("--admin-port", type=int, default=9901)
    envoy.add_argument(
        "--stats-port",
        type=int,
        default=None,
        help="also a listener on this port serving only the admin's /stats/prometheus (Envoy's own metrics)",
    )
    envoy.add_argument(
        "--sidecar",
        type=_listen_address,
        default=None,
        help="the sidecar's address (default: extproc.listen[0])",
    )
    envoy.add_argument("--upstream", default="http://127.0.0.1:8000", help="upstream base URL")
    envoy.set_defaults(func=cmd_envoy_config)

    _gateway_parser(commands)

    mock = commands.add_parser("mock-upstream", help="run the mock OpenAI upstream")
    mock.add_argument("--port", type=int, default=8000)
    mock.add_argument("--host", default="127.0.0.1")
    mock.set_defaults(func=cmd_mock_upstream)
    return root


def _gateway_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    gateway = commands.add_parser(
        "gateway-config",
        help="print Envoy Gateway's EnvoyExtensionPolicy, and the sidecar's Deployment and Service",
    )
    gateway.add_argument("--config", required=True)
    gateway.add_argument("--target-kind", choices=("Gateway", "HTTPRoute"), required=True)
    gateway.add_argument("--target-name", required=True, help="what the policy attaches to")
    gateway.add_argument("--section-name", default=None, help="only this listener or route rule")
    gateway.add_argument("--namespace", default=None, help="the target's namespace (default: kubectl's)")
    gateway.add_argument("--service", default="llm-extproc", help="the sidecar's Service and Deployment")
    gateway.add_argument("--port", type=int, default=50051, help="the sidecar's gRPC port")
    gateway.add_argument("--image", default=None, help="the sidecar's image (default llm-extproc:<version>)")
    gateway.add_argument("--replicas", type=int, default=2)
    gateway.add_argument("--configmap", default=None, help="config.yaml and handlers (<service>-config)")
    gateway.add_argument("--policy-only", action="store_true", help="only the EnvoyExtensionPolicy")
    gateway.set_defaults(func=cmd_gateway_config)


def installed_version() -> str:
    """The installed distribution's version (pyproject's), what `--version` and bug reports name."""
    try:
        return metadata.version("llm-extproc")
    except metadata.PackageNotFoundError:  # run from a source tree that was never pip-installed
        return "unknown (not installed)"


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text!r}")
    return value


def _listen_address(text: str) -> ListenAddress:
    try:
        return ListenAddress.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _worker_index(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return int(text)


def _log_format(command: argparse.ArgumentParser, default: str) -> None:
    command.add_argument("--log-format", choices=("json", "text"), default=default)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what `serve` hands its workers
    try:
        return int(args.func(args))
    except (ConfigError, HandlerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
