"""Cases guardrails and guardrails-selected: guardrails written as LiteLLM's docs write them.

- `PromptScreen` (pre_call, default_on): scans the last message for a banned phrase and passes.
- `DuringCallScreen` (during_call, default_on): the same beside the upstream call.
- `OptInScreen` (pre_call, not default_on): the requests never name it, so it never runs.
"""

from typing import Any

from fastapi import HTTPException
from litellm.integrations.custom_guardrail import CustomGuardrail

BANNED = "how to make a bomb"


def _last_text(data: dict[str, Any]) -> str:
    content = data["messages"][-1].get("content")
    return content.lower() if isinstance(content, str) else ""


class PromptScreen(CustomGuardrail):
    async def async_pre_call_hook(
        self, user_api_key_dict: Any, cache: Any, data: dict[str, Any], call_type: str
    ) -> dict[str, Any]:
        if BANNED in _last_text(data):
            raise HTTPException(status_code=400, detail={"error": "Violated guardrail policy"})
        return data


class DuringCallScreen(CustomGuardrail):
    async def async_moderation_hook(
        self, data: dict[str, Any], user_api_key_dict: Any, call_type: str
    ) -> None:
        if BANNED in _last_text(data):
            raise HTTPException(status_code=400, detail={"error": "Violated guardrail policy"})


class OptInScreen(CustomGuardrail):
    async def async_pre_call_hook(
        self, user_api_key_dict: Any, cache: Any, data: dict[str, Any], call_type: str
    ) -> dict[str, Any]:
        raise HTTPException(status_code=400, detail={"error": "the opt-in guardrail ran unasked"})
