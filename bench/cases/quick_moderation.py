"""Case moderation: a moderation hook that passes every request at once (no sleep, no I/O)."""

from typing import Any

from extproc import CustomLogger, UserAPIKeyAuth


class QuickModeration(CustomLogger):
    async def async_moderation_hook(
        self, data: dict[str, Any], user_api_key_dict: UserAPIKeyAuth, call_type: str
    ) -> None:
        return None


handler = QuickModeration()
