"""The seed's handler: rewrite the model of every request."""

from typing import Literal

from extproc import CustomLogger, DualCache, UserAPIKeyAuth


class MyCustomHandler(CustomLogger):
    async def async_pre_call_hook(
        self,
        user_api_key_dict: UserAPIKeyAuth,
        cache: DualCache,
        data: dict,
        call_type: Literal[  # the names LiteLLM's proxy passes (extproc.call_types: proxy, the default)
            "acompletion",
            "atext_completion",
            "aembedding",
            "aimage_generation",
            "amoderation",
            "atranscription",
        ],
    ):
        data["model"] = "my-new-model"
        return data


proxy_handler_instance = MyCustomHandler()
