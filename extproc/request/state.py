"""`RequestState`: what one request has told the sidecar so far, shared by the parts of the request core.

The session fills it phase by phase; admission, endings and streaming read it. It lives as long as the
gRPC stream of its request and is never shared between requests.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from extproc.api.family import ApiFamily
from extproc.errors import ProxyException
from extproc.request.pipeline import Pipeline
from extproc.settings.auth import UserAPIKeyAuth
from extproc.types import Headers, JSONDict, hook_call_type


class RequestState:
    """One request's facts: its family, headers, caller, decoded data and upstream status."""

    __slots__ = (
        "_user",
        "data",
        "family",
        "first_chunk_s",
        "headers",
        "metadata",
        "pipeline",
        "public_model",
        "request_id",
        "span",
        "start_time",
        "status",
    )

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.family: ApiFamily | None = None  # None: not an LLM request (or not one the hooks see)
        self.headers: Headers = {}
        self.metadata: dict[str, Any] = {}  # the metadata namespaces identity may come from
        self.request_id = ""
        self.start_time = datetime.now()
        self.data: JSONDict | None = None  # what hooks see after the pre-call chain, sidecar keys included
        self.public_model: str | None = None  # the client's model name when routing renamed it upstream
        self.status = 0  # the upstream's status, once its headers came
        self.first_chunk_s: float | None = None  # a stream's first body chunk, seconds after the start
        self.span: Any = None  # its OpenTelemetry span when traces are on and it is sampled
        self._user: UserAPIKeyAuth | None = None

    @property
    def user(self) -> UserAPIKeyAuth:
        """The caller, built from the headers and metadata on first use."""
        if self._user is None:
            route = self.family.path if self.family else ""
            try:
                self._user = self.pipeline.config.sidecar.auth.build(self.headers, self.metadata, None, route)
            except ProxyException:
                # Refused credentials (several keys): the failure hooks see an anonymous caller.
                self._user = UserAPIKeyAuth(request_route=route)
                raise
        return self._user

    @property
    def call_type(self) -> str | None:
        """The `call_type` hooks receive (`extproc.call_types`); None for a request no hook sees."""
        if self.family is None:
            return None
        return hook_call_type(self.family.call_type, self.pipeline.config.sidecar.call_types)

    @property
    def call_type_label(self) -> str | None:
        """The documented name, for metrics and Envoy's metadata: stable whatever `extproc.call_types`
        says, so dashboards and access-log queries do not change with it."""
        return self.family.call_type.value if self.family is not None else None

    def forget(self) -> None:
        """Drop what the request carried, once nothing will read it again."""
        self.headers = {}
        self.metadata = {}
        self.data = None
