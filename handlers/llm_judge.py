"""LLM-judge moderation: an OpenAI-compatible judge says whether a request is safe, beside the upstream call.

Options (`extproc.handlers."handlers.llm_judge".options`):
- `base_url` (required): the judge, e.g. `http://guard:8000` (`/v1` is added unless it ends with it).
- `api_key`: sent as `Authorization: Bearer <key>` (`os.environ/NAME` is resolved by the config loader).
- `mode`: `moderations` (default): POST `{model, input}` to `/v1/moderations`, refuse when
  `results[0].flagged`; `llama_guard`: POST a chat completion whose user turn is Llama Guard 3's
  classification prompt around the conversation, refuse when the answer starts with `unsafe`.
- `model`: default `omni-moderation-latest` (moderations) or `meta-llama/Llama-Guard-3-8B` (llama_guard).
- `timeout_ms`: 2000, for the whole judge call.
- `fail_open`: false. When the judge times out, cannot be reached, answers non-2xx or something unreadable:
  allow with a warning (true), or refuse with 503 `content moderation unavailable` (false).
- `categories`: only these refuse: OpenAI names (`violence`) in moderations mode; codes (`S1`) or names
  (`Violent Crimes`) in llama_guard mode. Default: every category.

The judge reads every text place `extproc.request_texts` yields, normalised (`extproc.normalize_text`):
message contents, names, tool calls and their arguments, tool results and tool definitions, prompts and
inputs. Every message counts, system messages too (a client writes those as well): the assistant's as
"Agent", all others as "User" turns.

A refusal: 400 `{"error": "Violated content safety policy", "category": "violence"}` (several categories
are joined with ", "; Llama Guard codes become Llama Guard 3's names where known).
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import httpx

from extproc import (
    CallType,
    CustomLogger,
    HTTPException,
    TextPlace,
    UserAPIKeyAuth,
    normalize_text,
    request_texts,
)
from extproc.types import call_type_named

log = logging.getLogger("handlers.llm_judge")

MODES = {"moderations": "omni-moderation-latest", "llama_guard": "meta-llama/Llama-Guard-3-8B"}
LLAMA_GUARD_3 = {
    "S1": "Violent Crimes", "S2": "Non-Violent Crimes", "S3": "Sex-Related Crimes",
    "S4": "Child Sexual Exploitation", "S5": "Defamation", "S6": "Specialized Advice", "S7": "Privacy",
    "S8": "Intellectual Property", "S9": "Indiscriminate Weapons", "S10": "Hate",
    "S11": "Suicide & Self-Harm", "S12": "Sexual Content", "S13": "Elections",
    "S14": "Code Interpreter Abuse",
}  # fmt: skip
_VERDICT = re.compile(r"\s*(safe|unsafe)\b(.*)", re.IGNORECASE | re.DOTALL)


class UnreadableAnswer(ValueError):
    """The judge answered 2xx with something that is not a verdict."""


def _joined(places: list[TextPlace]) -> str:
    return "\n".join(normalize_text(place.text) for place in places)


def llama_guard_prompt(turns: list[tuple[str, str]]) -> str:
    """Llama Guard 3's task for the last turn of a conversation of ("User" | "Agent", text) turns."""
    role = turns[-1][0]
    categories = "\n".join(f"{code}: {name}." for code, name in LLAMA_GUARD_3.items())
    conversation = "\n\n".join(f"{who}: {text}" for who, text in turns)
    return (
        f"Task: Check if there is unsafe content in '{role}' messages in conversations according our "
        "safety policy with the below categories.\n\n"
        f"<BEGIN UNSAFE CONTENT CATEGORIES>\n{categories}\n<END UNSAFE CONTENT CATEGORIES>\n\n"
        f"<BEGIN CONVERSATION>\n\n{conversation}\n\n<END CONVERSATION>\n\n"
        f"Provide your safety assessment for ONLY THE LAST {role} message in the above conversation:\n"
        " - First line must read 'safe' or 'unsafe'.\n"
        " - If unsafe, a second line must include a comma-separated list of violated categories."
    )


class Handler(CustomLogger):
    """Refuses what an OpenAI moderations endpoint or a Llama Guard model flags."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        mode: str = "moderations",
        model: str | None = None,
        timeout_ms: int = 2000,
        fail_open: bool = False,
        categories: list[str] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(base_url, str) or not re.match(r"https?://[^/\s]+", base_url):
            raise ValueError(
                f"base_url: required, an http(s) URL such as http://guard:8000, not {base_url!r}"
            )
        if api_key is not None and (not isinstance(api_key, str) or not api_key):
            raise ValueError("api_key: expected a non-empty string")
        if mode not in MODES:
            raise ValueError(f"mode: {mode!r} is neither 'moderations' nor 'llama_guard'")
        if model is not None and (not isinstance(model, str) or not model):
            raise ValueError(f"model: expected a non-empty string, not {model!r}")
        if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int) or timeout_ms <= 0:
            raise ValueError(f"timeout_ms: expected a positive number of milliseconds, not {timeout_ms!r}")
        if not isinstance(fail_open, bool):
            raise ValueError(f"fail_open: expected true or false, not {fail_open!r}")
        if categories is not None and (
            not isinstance(categories, list) or not all(isinstance(c, str) and c for c in categories)
        ):
            raise ValueError(f"categories: expected a list of category names, not {categories!r}")
        base = base_url.rstrip("/")
        self.api_base = base if base.endswith("/v1") else f"{base}/v1"
        self.headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.mode = mode
        self.model = model or MODES[mode]
        self.timeout_s = timeout_ms / 1000
        self.fail_open = fail_open
        self.categories = None if categories is None else {c.lower() for c in categories}
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _http(self) -> httpx.AsyncClient:
        """One client per handler, made inside the running loop (again if the loop changed)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = httpx.AsyncClient(headers=self.headers, timeout=self.timeout_s)
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        async with asyncio.timeout(self.timeout_s):
            response = await self._http().post(f"{self.api_base}{path}", json=body)
        response.raise_for_status()
        return response.json()

    def _keep(self, *names: str) -> bool:
        return self.categories is None or any(name.lower() in self.categories for name in names)

    async def _moderations(self, text: str) -> str | None:
        result = (await self._post("/moderations", {"model": self.model, "input": text}))["results"][0]
        if not isinstance(result, dict) or not isinstance(result.get("flagged"), bool):
            raise UnreadableAnswer(f"not a moderation result: {result!r}")
        if not result["flagged"]:
            return None
        categories = result.get("categories")
        flagged = [k for k, hit in categories.items() if hit is True] if isinstance(categories, dict) else []
        if self.categories is not None:
            return ", ".join(name for name in flagged if self._keep(name)) or None
        return ", ".join(flagged) or "unspecified"

    async def _llama_guard(self, turns: list[tuple[str, str]]) -> str | None:
        message = {"role": "user", "content": llama_guard_prompt(turns)}
        body = {"model": self.model, "messages": [message], "temperature": 0, "max_tokens": 20}
        content = (await self._post("/chat/completions", body))["choices"][0]["message"]["content"]
        verdict = _VERDICT.match(content) if isinstance(content, str) else None
        if verdict is None:
            raise UnreadableAnswer(f"neither 'safe' nor 'unsafe': {content!r}")
        if verdict[1].lower() == "safe":
            return None
        codes = [code.upper() for code in re.findall(r"\bS\d+\b", verdict[2], re.IGNORECASE)]
        names = [
            LLAMA_GUARD_3.get(code, code) for code in codes if self._keep(code, LLAMA_GUARD_3.get(code, code))
        ]
        if self.categories is not None:
            return ", ".join(names) or None
        return ", ".join(names) or "unspecified"

    def _turns(self, data: dict[str, Any], call_type: str) -> list[tuple[str, str]]:
        """Every text place of the request (`request_texts`, normalised), one place per line; for chats,
        one turn per message: assistant messages (their tool calls too) as "Agent", every other message
        (user, system, tool results) as "User"."""
        if call_type_named(call_type) is not CallType.COMPLETION:  # either naming (extproc.call_types)
            return [("User", _joined(request_texts(data, call_type)))]
        # tool definitions first: Llama Guard judges the last user turn, which stays the conversation's
        rest = {key: value for key, value in data.items() if key != "messages"}
        turns = [("User", _joined(request_texts(rest, call_type)))]
        for message in data.get("messages") or ():
            role = message.get("role") if isinstance(message, dict) else None
            if isinstance(role, str):
                text = _joined(request_texts({"messages": [message]}, call_type))
                turns.append(("Agent" if role == "assistant" else "User", text))
        return turns

    async def async_moderation_hook(
        self, data: dict[str, Any], user_api_key_dict: UserAPIKeyAuth, call_type: str
    ) -> None:
        turns = [(who, text) for who, text in self._turns(data, call_type) if text.strip()]
        if not turns:
            return
        try:
            if self.mode == "moderations":
                category = await self._moderations("\n\n".join(text for _, text in turns))
            else:
                category = await self._llama_guard(turns)
        except (TimeoutError, httpx.HTTPError, ValueError, LookupError, TypeError) as exc:
            if self.fail_open:
                log.warning("judge at %s unavailable, request allowed (fail_open): %r", self.api_base, exc)
                return
            raise HTTPException(status_code=503, detail={"error": "content moderation unavailable"}) from exc
        if category is not None:
            detail = {"error": "Violated content safety policy", "category": category}
            raise HTTPException(status_code=400, detail=detail)
