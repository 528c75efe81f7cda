"""Rate limiter: max parallel requests, requests and tokens per minute, per key, user, team, team
member, end user and key+model (LiteLLM's parallel request limiter, on `DualCache`).

A request reserves at pre-call: a parallel slot, one request and an estimate of its tokens in the
current window, for every scope that has a limit; if any is over, everything it took is given back
and it gets a 429. Its ending (the success or failure event, which the sidecar guarantees exactly
once, client disconnects included) releases the slot and settles the tokens with the real usage.
What a request holds is its record: kept in a context variable of the request (every hook call and
ending event of a request runs in its context), where no later hook can erase it, and shown in
`data["metadata"]["rate_limiter"]`. Nothing is released twice or released that was never taken. The
record carries a random token only this handler knows, so a client cannot forge one in the `metadata`
it sends.

Tokens count what the upstream used: its reported usage, or, when a stream carries none or ends early
(the client left before the usage event), the prompt and the text already streamed, estimated at four
characters a token. Tokens streamed to a client that leaves are not given back. A request whose own
estimate exceeds a token limit is refused before anything is counted, so no amount larger than a limit
ever reaches a shared counter (a `max_tokens` beyond 64 bits cannot reset one).

Parallel slots carry a per-request token on the shared store, so a slot taken or given back while the
store was too slow to answer is settled exactly once the store answers again (see `ResilientBackend`).

Every give-back (a release, a settlement, a 429's rollback) changes only a counter that still exists,
so one that expired while the request was in flight is not re-created negative, and goes to the store
that counted the take (shared or, during an outage, local), so an outage never moves counts between
the two.
"""

from __future__ import annotations

import math
import secrets
import time
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from extproc import (
    CustomLogger,
    DualCache,
    HTTPException,
    UserAPIKeyAuth,
    get_formatted_prompt,
    sidecar_metadata,
)
from extproc.api.views import unwrap
from extproc.errors import ClientDisconnected
from extproc.state.cache import Store

SCOPES = ("api_key", "user", "team", "team_member", "end_user", "api_key_model")
LIMITS = ("max_parallel_requests", "rpm", "tpm")
HEADER_TYPE = {"max_parallel_requests": "max_parallel_requests", "rpm": "requests", "tpm": "tokens"}
# UserAPIKeyAuth fields that set a scope's limits (they win over the config's tables).
AUTH_LIMITS = {
    "api_key": {"max_parallel_requests": "max_parallel_requests", "rpm": "rpm_limit", "tpm": "tpm_limit"},
    "team": {
        "max_parallel_requests": "team_max_parallel_requests",
        "rpm": "team_rpm_limit",
        "tpm": "team_tpm_limit",
    },
    "end_user": {"rpm": "end_user_rpm_limit", "tpm": "end_user_tpm_limit"},
}
# Counts stay exact in a shared store's floats (and in JSON) below 2**53: no limit or amount goes beyond.
MAX_COUNT = 2**53
CHARS_PER_TOKEN = 4
# One request's records, by handler (its owner token). Set at pre-call; every later hook call and
# ending event of the request runs in a copy of the request's context, so they find it there.
RECORDS: ContextVar[dict[str, dict[str, Any]] | None] = ContextVar("rate_limiter_records", default=None)


def _tokens(chars: int) -> int:
    return math.ceil(chars / CHARS_PER_TOKEN)


def _count(value: Any) -> int | None:
    """A token count from an upstream's usage, bounded; None when it is not a count."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return min(value, MAX_COUNT)


def _used_tokens(response: Any) -> int | None:
    """The tokens an answer's usage reports: `total_tokens` (OpenAI, Responses), or Anthropic's input
    (with its cache) plus output tokens; None when it reports none."""
    raw = unwrap(response)
    usage = raw.get("usage") if isinstance(raw, dict) else None
    if not isinstance(usage, dict):
        return None
    total = _count(usage.get("total_tokens"))
    if total is not None:
        return total
    names = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
    parts = [_count(usage.get(name)) for name in names]
    if parts[0] is None or parts[1] is None:
        return None
    return min(sum(part or 0 for part in parts), MAX_COUNT)


def _limit_table(value: Any, where: str) -> dict[str, int]:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a mapping of {', '.join(LIMITS)}")
    for name, limit in value.items():
        if name not in LIMITS:
            raise ValueError(f"{where}.{name}: unknown limit (expected one of {', '.join(LIMITS)})")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit < MAX_COUNT:
            raise ValueError(f"{where}.{name}: expected an integer >= 0 and < 2**53, got {limit!r}")
    return dict(value)


def _limit_of(key: str) -> str:
    """The limit a counter key counts: `rl:<scope>:<ident>:parallel` or `rl:<scope>:<ident>:<name>:<window>`.
    Read from the end: the ident is the client's (a model or user name) and may hold anything."""
    if key.endswith(":parallel"):
        return "max_parallel_requests"
    return key.rsplit(":", 2)[-2]


class Handler(CustomLogger):
    def __init__(
        self,
        limits: dict[str, Any] | None = None,
        keys: dict[str, Any] | None = None,
        teams: dict[str, Any] | None = None,
        window_s: int = 60,
        parallel_ttl_s: int = 600,
    ) -> None:
        super().__init__()
        limits = limits or {}
        unknown = set(limits) - set(SCOPES)
        if unknown:
            raise ValueError(
                f"limits: unknown scope {sorted(unknown)[0]!r} (expected one of {', '.join(SCOPES)})"
            )
        self.defaults = {scope: _limit_table(table, f"limits.{scope}") for scope, table in limits.items()}
        self.keys = {k: _limit_table(v, f"keys.{k}") for k, v in (keys or {}).items()}
        self.teams = {k: _limit_table(v, f"teams.{k}") for k, v in (teams or {}).items()}
        if window_s < 1 or parallel_ttl_s < 1:
            raise ValueError("window_s and parallel_ttl_s must be >= 1")
        self.window_s, self.parallel_ttl_s = window_s, parallel_ttl_s
        self.cache: DualCache | None = None
        self._owner = secrets.token_hex(16)  # marks the records this handler wrote; no client can guess it

    def _scopes(self, user: UserAPIKeyAuth, model: Any) -> list[tuple[str, str, dict[str, int]]]:
        ids = {
            "api_key": user.api_key,
            "user": user.user_id,
            "team": user.team_id,
            "team_member": f"{user.team_id}:{user.user_id}" if user.team_id and user.user_id else None,
            "end_user": user.end_user_id,
            "api_key_model": f"{user.api_key}:{model}" if user.api_key and isinstance(model, str) else None,
        }
        scopes = []
        for scope, ident in ids.items():
            if not ident:
                continue
            limits = dict(self.defaults.get(scope, {}))
            if scope == "api_key":
                limits.update(self.keys.get(ident, {}) or self.keys.get(user.key_alias or "", {}))
            elif scope == "team":
                limits.update(self.teams.get(ident, {}))
            elif scope == "api_key_model":
                for name, field in (("rpm", "rpm_limit_per_model"), ("tpm", "tpm_limit_per_model")):
                    if isinstance(model, str) and model in getattr(user, field):
                        limits[name] = int(getattr(user, field)[model])
            for name, field in AUTH_LIMITS.get(scope, {}).items():
                if getattr(user, field) is not None:
                    limits[name] = min(int(getattr(user, field)), MAX_COUNT)
            if limits:
                scopes.append((scope, ident, limits))
        return scopes

    async def async_pre_call_hook(
        self, user_api_key_dict: UserAPIKeyAuth, cache: DualCache, data: dict[str, Any], call_type: str
    ) -> Any:
        self.cache = cache
        window = int(time.time() // self.window_s)
        max_tokens = data.get("max_tokens")
        reserved_output = (
            max_tokens if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) else 0
        )
        prompt = _tokens(len(get_formatted_prompt(data, call_type)))
        estimate = prompt + max(0, reserved_output)
        scopes = self._scopes(user_api_key_dict, data.get("model"))
        # A request that alone exceeds a token limit is refused before anything is counted: no amount
        # larger than a limit ever reaches a counter (a huge one would wipe a shared float's count).
        for scope, ident, limits in scopes:
            if "tpm" in limits and estimate > limits["tpm"]:
                raise self._exceeded(scope, ident, "tpm", limits["tpm"], window)
        token = secrets.token_hex(8)  # names this request's parallel slots on the shared store
        takes: list[tuple[str, float, float | None, str | None]] = []  # (key, amount, ttl, token)
        checks: list[tuple[str, str, str, int]] = []  # (scope, ident, limit name, limit), as `takes`
        for scope, ident, limits in scopes:
            for name, limit in limits.items():
                if name == "max_parallel_requests":
                    takes.append((f"rl:{scope}:{ident}:parallel", 1, self.parallel_ttl_s, token))
                else:
                    amount = 1 if name == "rpm" else estimate
                    takes.append((f"rl:{scope}:{ident}:{name}:{window}", amount, self.window_s * 2, None))
                checks.append((scope, ident, name, limit))
        # Every counter in one call (one round trip on a shared store); if any is over its limit, all
        # are given back. A store that refuses (on_unavailable: deny) raises with nothing taken.
        counted = await cache.async_increment_counters(takes)
        held: list[tuple[str, float, float | None, Store]] = [
            (key, amount, ttl, store)
            for (key, amount, ttl, _), (_, store) in zip(takes, counted, strict=True)
        ]
        headers: dict[str, str] = {}
        for (scope, ident, name, limit), (count, _) in zip(checks, counted, strict=True):
            if count > limit:
                await self._give_back(cache, held, token)
                raise self._exceeded(scope, ident, name, limit, window)
            kind = HEADER_TYPE[name]
            headers[f"x-ratelimit-{scope}-remaining-{kind}"] = str(max(0, limit - int(count)))
            headers[f"x-ratelimit-{scope}-limit-{kind}"] = str(limit)
        record = {
            "held": held,
            "estimate": estimate,
            "prompt": prompt,
            "streamed": None,  # characters of the answer streamed so far, once a stream started
            "token": token,
            "headers": headers,
            "owner": self._owner,
        }
        RECORDS.set({**(RECORDS.get() or {}), self._owner: record})
        metadata = sidecar_metadata(data)
        if metadata is None:  # called without the sidecar's additions (a test, a direct call)
            metadata = data.setdefault("metadata", {})
        metadata["rate_limiter"] = record
        return None

    async def _give_back(
        self, cache: DualCache, held: list[tuple[str, float, float | None, Store]], token: str
    ) -> None:
        """Give back everything a refused request took, each on the store that counted it."""
        await cache.async_adjust_counters(
            [
                (key, -amount, store, token if key.endswith(":parallel") else None)
                for key, amount, _, store in held
            ]
        )

    def _exceeded(self, scope: str, ident: str, name: str, limit: int, window: int) -> HTTPException:
        if name == "max_parallel_requests":
            retry_after, resets = 1, time.time() + 1
        else:
            resets = (window + 1) * self.window_s
            retry_after = max(1, math.ceil(resets - time.time()))
        when = datetime.fromtimestamp(resets, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        kind = {"rpm": "requests", "tpm": "tokens"}.get(name, name)
        message = (
            f"Rate limit exceeded for {scope}: {ident}. Limit type: {kind}. Current limit: {limit}, "
            f"Remaining: 0. Limit resets at: {when}"
        )
        headers = {
            "retry-after": str(retry_after),
            f"x-ratelimit-{scope}-remaining-{HEADER_TYPE[name]}": "0",
            f"x-ratelimit-{scope}-limit-{HEADER_TYPE[name]}": str(limit),
        }
        return HTTPException(status_code=429, detail=message, headers=headers)

    async def _release(self, record: dict[str, Any] | None, used_tokens: int | None) -> None:
        if record is None or record.get("released") or self.cache is None:
            return
        record["released"] = True
        # Tokens are settled before slots are freed (in one call, in this order), so a client that has its
        # slot back sees its tokens counted.
        changes: list[tuple[str, float, Store, str | None]] = []
        for key, amount, _, store in record["held"]:
            if _limit_of(key) == "tpm":
                settle = (used_tokens if used_tokens is not None else 0) - amount
                if settle:
                    changes.append((key, settle, store, None))
        for key, _, _, store in record["held"]:
            if key.endswith(":parallel"):
                changes.append((key, -1, store, record["token"]))
        if changes:
            await self.cache.async_adjust_counters(changes)

    def _streamed_tokens(self, record: dict[str, Any]) -> int | None:
        """The prompt and the answer text let through so far, for a stream; None if none started."""
        streamed = record.get("streamed")
        return None if streamed is None else record["prompt"] + _tokens(streamed)

    async def async_log_success_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        total = _used_tokens(response_obj)
        record = self._request_record(kwargs)
        if record is None:
            return
        if total is None:  # no usage reported (a stream without include_usage): what went through
            total = self._streamed_tokens(record)
        await self._release(record, total if total is not None else record["estimate"])

    async def async_log_failure_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        record = self._request_record(kwargs)
        if record is None:
            return
        # What reached the client stays counted: a stream's text so far, and the prompt of a request
        # whose client left while the upstream had it. Anything else failed before using the upstream.
        used = self._streamed_tokens(record)
        if used is None and isinstance(kwargs.get("exception"), ClientDisconnected):
            used = record["prompt"]
        await self._release(record, used)

    async def async_post_call_streaming_hook(self, user_api_key_dict: UserAPIKeyAuth, response: Any) -> Any:
        """Note how much of a stream's text went through (`response`: the text so far)."""
        record = self._current()
        if record is not None and isinstance(response, str):
            record["streamed"] = len(response)
        return None

    async def async_post_call_response_headers_hook(
        self,
        data: dict[str, Any],
        user_api_key_dict: UserAPIKeyAuth,
        response: Any,
        request_headers: Any = None,
    ) -> dict[str, str] | None:
        record = self._record(sidecar_metadata(data) or {}) or self._current()
        return dict(record["headers"]) if record else None

    def _current(self) -> dict[str, Any] | None:
        """This handler's record for the request running in this context."""
        return (RECORDS.get() or {}).get(self._owner)

    def _request_record(self, kwargs: Any) -> dict[str, Any] | None:
        """The record of the request an event is about: the original its context holds, which no later
        hook can drop or replace; the one its metadata shows only when the context holds another
        request's (one task driving several requests, as tests that call the handler directly do)."""
        metadata = (kwargs.get("litellm_params") or {}).get("metadata") or {}
        shown, current = self._record(metadata), self._current()
        if shown is None or (current is not None and current["token"] == shown.get("token")):
            return current  # the original, even when a later hook copied `metadata`
        return shown  # a context that ran several requests (a test driving the handler directly)

    def _record(self, metadata: Any) -> dict[str, Any] | None:
        """This handler's record for the request; anything else under the key (a client's) is ignored."""
        record = metadata.get("rate_limiter") if isinstance(metadata, dict) else None
        return record if isinstance(record, dict) and record.get("owner") == self._owner else None
