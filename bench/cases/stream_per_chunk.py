"""Case stream-per-chunk: replace the text of every streamed chunk (the cost of the per-chunk hook)."""

from extproc import CustomLogger, UserAPIKeyAuth

REPLACEMENT = "[bench]"


class PerChunkRewrite(CustomLogger):
    async def async_post_call_streaming_hook(self, user_api_key_dict: UserAPIKeyAuth, response: str) -> str:
        return REPLACEMENT


handler = PerChunkRewrite()
