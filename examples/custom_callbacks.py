"""The seed's handler: rewrite the model of every request."""

from typing import Literal

from extproc import CustomLogger, DualCache, UserAPIKeyAuth


class MyCustomHandler(CustomLogger):
    async def async_pre_call_hook(
        self,
        user_api_key_dict: UserAPIKeyAuth,
        cache: DualCache,
        data: dict,
        call_type: Literal[
            "completion",
            "text_completion",
            "embeddings",
            "image_generation",
            "moderation",
            "audio_transcription",
        ],
    ):
        data["model"] = "my-new-model"
        return data


proxy_handler_instance = MyCustomHandler()
