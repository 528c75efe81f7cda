"""`make soak`: a bounded mixed load through a real Envoy, the sidecar and a real Valkey, then checks.

Traffic (loopback only, fixed concurrency, stops by itself after SOAK_SECONDS): plain chats, streams
through an iterator hook, pre-call refusals, moderation refusals, and bursts on a key whose parallel
limit is 1 (some 429s by design). Afterwards: no unexpected status or transport error, the sidecar's RSS
flat within 10% between the end of the warm-up and the end, and every parallel counter in Valkey at 0.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from redis_server import ValkeyServer  # noqa: E402

from extproc.devtools.dev import DevStack  # noqa: E402

HANDLERS = """
from extproc import CustomLogger, HTTPException

class Policy(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        if data["messages"][0]["content"] == "refuse":
            return "refused by policy"

    async def async_moderation_hook(self, data, user_api_key_dict, call_type):
        if data["messages"][0]["content"] == "flag":
            raise HTTPException(status_code=400, detail={"error": "Violated content safety policy"})

class Upper(CustomLogger):
    async def async_post_call_streaming_iterator_hook(self, user_api_key_dict, response, request_data):
        async for chunk in response:
            if chunk.choices and chunk.choices[0].delta.content:
                chunk.choices[0].delta.content = chunk.choices[0].delta.content.upper()
            yield chunk

policy, upper = Policy(), Upper()
"""

CONFIG = """
litellm_settings:
  callbacks: [handlers.rate_limiter, h.policy, h.upper]
extproc:
  cache: {{redis_url: "{redis}"}}
  handlers:
    handlers.rate_limiter:
      options:
        limits: {{api_key: {{max_parallel_requests: 64}}}}
        keys: {{{tight}: {{max_parallel_requests: 1}}}}
"""
TIGHT_KEY = "sk-soak-tight"
KINDS = ("chat", "chat", "chat", "stream", "stream", "refuse", "flag", "burst")
EXPECTED = {"chat": {200}, "stream": {200}, "refuse": {200}, "flag": {400}, "burst": {200, 429}}


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def one(client: httpx.AsyncClient, kind: str) -> tuple[str, int]:
    content = kind if kind in ("refuse", "flag") else "hello there"
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": content}]}
    key = TIGHT_KEY if kind == "burst" else "sk-soak"
    headers = {"authorization": f"Bearer {key}", "x-mock-chunks": "8"}
    if kind == "stream":
        body["stream"] = True
        async with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response:
            text = (await response.aread()).decode()
            events = [e.removeprefix("data: ") for e in text.split("\n\n") if e.startswith("data: {")]
            joined = "".join(
                (json.loads(e)["choices"] or [{}])[0].get("delta", {}).get("content") or "" for e in events
            )
            ok = response.status_code == 200 and text.endswith("data: [DONE]\n\n") and "HELLO THERE" in joined
            return kind, response.status_code if ok else -1
    response = await client.post("/v1/chat/completions", json=body, headers=headers)
    return kind, response.status_code


async def load(url: str, seconds: float, concurrency: int, results: dict[str, Any]) -> None:
    deadline = time.monotonic() + seconds
    rng = random.Random(7)

    async def worker() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30, trust_env=False) as client:
            while time.monotonic() < deadline:
                kind = rng.choice(KINDS)
                calls = [one(client, kind)] * (2 if kind == "burst" else 1)
                for outcome in await asyncio.gather(*calls, return_exceptions=True):
                    if isinstance(outcome, BaseException):
                        results["errors"].append(f"{kind}: {type(outcome).__name__}: {outcome}")
                        continue
                    done_kind, status = outcome
                    results["count"] += 1
                    results["statuses"][f"{done_kind}:{status}"] = (
                        results["statuses"].get(f"{done_kind}:{status}", 0) + 1
                    )
                    if status not in EXPECTED[done_kind]:
                        results["errors"].append(f"{done_kind}: status {status}")

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def soak(seconds: float, concurrency: int = 8, warmup: float = 5.0) -> dict[str, Any]:
    import hashlib

    with ValkeyServer() as redis, tempfile.TemporaryDirectory() as folder:
        tight = hashlib.sha256(TIGHT_KEY.encode()).hexdigest()
        config = Path(folder) / "config.yaml"
        config.write_text(CONFIG.format(redis=redis.url, tight=tight))
        (Path(folder) / "h.py").write_text(HANDLERS)
        with DevStack(config, serve_args=tuple(os.environ.get("SOAK_SERVE_ARGS", "").split())) as stack:
            pid = stack.children["sidecar"].process.pid
            results: dict[str, Any] = {"count": 0, "errors": [], "statuses": {}}
            asyncio.run(load(stack.url, warmup, concurrency, {"count": 0, "errors": [], "statuses": {}}))
            rss_start = rss_kb(pid)
            started = time.monotonic()
            curve: list[tuple[float, float]] = []
            sampling = threading.Event()

            def sample() -> None:
                while not sampling.wait(max(1.0, seconds / 60)):
                    curve.append((round(time.monotonic() - started, 1), round(rss_kb(pid) / 1024, 1)))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            asyncio.run(load(stack.url, seconds, concurrency, results))
            elapsed = time.monotonic() - started
            sampling.set()
            sampler.join()
            rss_end = rss_kb(pid)
            time.sleep(0.5)  # endings are released by background events just after each answer
            client = redis.client()
            try:
                counters = {
                    key.decode(): float(client.get(key) or 0)
                    for key in client.scan_iter(match="llm-extproc:rl:*:parallel")
                }
            finally:
                client.close()
    leaked = {k: v for k, v in counters.items() if v != 0}
    growth = (rss_end - rss_start) / rss_start
    return {
        "seconds": round(elapsed, 1),
        "requests": results["count"],
        "requests_per_second": round(results["count"] / elapsed, 1),
        "statuses": results["statuses"],
        "errors": results["errors"][:20],
        "error_count": len(results["errors"]),
        "rss_start_mb": round(rss_start / 1024, 1),
        "rss_end_mb": round(rss_end / 1024, 1),
        "rss_growth": round(growth, 4),
        "rss_curve_mb": curve,
        "parallel_counters": len(counters),
        "leaked_counters": leaked,
        "ok": not results["errors"] and not leaked and abs(growth) <= 0.10 and results["count"] > 0,
    }


def main() -> int:
    seconds = float(os.environ.get("SOAK_SECONDS", "600"))
    print(f"soak: {seconds:.0f} s of mixed load through Envoy (loopback)...", flush=True)
    report = soak(seconds, warmup=float(os.environ.get("SOAK_WARMUP", "5")))
    print(json.dumps(report, indent=2))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(report, indent=2) + "\n")
    print("soak: " + ("OK" if report["ok"] else "FAILED"))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
