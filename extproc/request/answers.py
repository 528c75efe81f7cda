"""A whole upstream answer (buffered, not streamed): failure hooks for an error status, success hooks
otherwise, the client's model name put back, and a new body only when what the client gets changed."""

from __future__ import annotations

from typing import Any

from extproc.api.codecs import dumps_exact, loads_exact
from extproc.api.views import unwrap
from extproc.decisions import CONTINUE, UPSTREAM_STATUS, VERDICT, Continue, Decision
from extproc.errors import ProxyException
from extproc.request.endings import Ending
from extproc.request.state import RequestState
from extproc.types import HookKind


async def buffered_answer(request: RequestState, ending: Ending, body: bytes) -> tuple[Decision, Any]:
    """The answer to the upstream's whole body, and the response view the success hooks left (if any)."""
    try:
        response = loads_exact(body) if body else None
    except ValueError:
        response = None
    if request.status >= 400:
        return await ending.upstream_failed(response, body), None
    if not isinstance(response, dict):
        ending.succeeded(None)
        return CONTINUE, None
    assert request.family is not None and request.data is not None
    chain = request.pipeline.chain
    metadata: dict[str, Any] = {UPSTREAM_STATUS: request.status, **request.family.usage(response)}
    success_hooks = chain.has(HookKind.POST_CALL_SUCCESS)
    pristine = loads_exact(body) if success_hooks else None  # to compare with
    renamed = request.public_model is not None and response.get("model") != request.public_model
    if renamed:
        response["model"] = request.public_model  # the client sees the name it asked for
    view = request.family.answer_view(response)
    if success_hooks:
        view = await chain.post_call_success(request.data, request.user, view, request.family.answer_view)
    final = unwrap(view)
    decision = Continue(metadata=metadata)
    if (pristine is not None and final != pristine) or (pristine is None and renamed):
        try:
            new_body = dumps_exact(final)
        except TypeError as exc:
            message = f"llm-extproc: the response changed by hooks cannot be encoded: {exc}"
            raise ProxyException(message, 500) from None
        metadata[VERDICT] = "modified"
        length = (("content-length", str(len(new_body))),)
        decision = Continue(set_headers=length, body=new_body, metadata=metadata)
    ending.succeeded(view)
    return decision, view
