"""Names of LiteLLM's `litellm.proxy._types` that exist only for hook files written for LiteLLM.

`ProxyException` takes LiteLLM's arguments (`message, type, param, code`) and is the sidecar's own
`ProxyException`, so raising it from a hook answers with that status and envelope. `LitellmUserRoles`
is LiteLLM's role enum, for hooks that compare `user_api_key_dict.user_role` with it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from extproc import errors


class ProxyException(errors.ProxyException):
    """LiteLLM's constructor over the sidecar's exception; `code` is the HTTP status (int or str)."""

    def __init__(
        self,
        message: str,
        type: str,
        param: str | None,
        code: int | str | None = 500,
        headers: dict[str, str] | None = None,
        openai_code: str | None = None,
        **_: Any,
    ) -> None:
        try:
            status = int(code) if code is not None else 500
        except (TypeError, ValueError):
            status = 500
        super().__init__(message, status, param, type)
        self.headers = headers
        self.openai_code = openai_code or type


class LitellmUserRoles(StrEnum):
    """The roles a LiteLLM key or user may have."""

    PROXY_ADMIN = "proxy_admin"
    PROXY_ADMIN_VIEW_ONLY = "proxy_admin_viewer"
    ORG_ADMIN = "org_admin"
    INTERNAL_USER = "internal_user"
    INTERNAL_USER_VIEW_ONLY = "internal_user_viewer"
    TEAM = "team"
    CUSTOMER = "customer"
