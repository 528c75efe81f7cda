"""`Session.handle` driven directly, phase by phase, for pipelines loaded from a config and a handler file
written to the test's folder. No gRPC: the outbox records what the session sends on its own."""

import asyncio
import textwrap

import orjson
import pytest
from prometheus_client import REGISTRY

from extproc.decisions import PASS_THROUGH_MODE, BodyMode, Continue, Message, Mode, Reply
from extproc.errors import ClientDisconnected, HTTPException, ProxyException, UpstreamError
from extproc.request import pipeline
from extproc.request.admission import ENFORCE_USER_MESSAGE
from extproc.request.session import Session
from extproc.types import Phase

HANDLERS = """
import asyncio

from extproc import CustomLogger, HTTPException


class Rewrite(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        data["model"] = "my-new-model"
        return data


class Reads(CustomLogger):
    def __init__(self):
        super().__init__()
        self.calls = 0

    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        self.calls += 1


class Refuse(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        return "refused!"


class Forbid(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        raise HTTPException(status_code=403, detail="forbidden")


class Failure(CustomLogger):
    replacement = None

    def __init__(self):
        super().__init__()
        self.seen = []

    async def async_post_call_failure_hook(self, request_data, original_exception, user_api_key_dict):
        self.seen.append((original_exception, request_data))
        return self.replacement


class Success(CustomLogger):
    replacement = None

    def __init__(self):
        super().__init__()
        self.seen = []

    async def async_post_call_success_hook(self, data, user_api_key_dict, response):
        self.seen.append(response.id)
        return self.replacement


class Headers(CustomLogger):
    def __init__(self):
        super().__init__()
        self.seen = []

    async def async_post_call_response_headers_hook(self, data, user_api_key_dict, response):
        self.seen.append(response)
        return {"X-Hook": "1"}


class Moderator(CustomLogger):
    gate = None

    async def async_moderation_hook(self, data, user_api_key_dict, call_type):
        if self.gate is not None:
            await self.gate.wait()
        raise HTTPException(status_code=400, detail="flagged")
"""

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
ANSWER = {
    "id": "upstream",
    "object": "chat.completion",
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}}],
    "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
}
BOTH_SIDES = Mode(request_body=BodyMode.BUFFERED, response_headers=True)
ANSWER_BUFFERED = BOTH_SIDES.with_response_body(BodyMode.BUFFERED)


class Outbox:
    """Records what a session sends outside the answers to Envoy's messages."""

    def __init__(self):
        self.pushed, self.extended, self.streamed = [], [], []
        self.on_extend = None

    async def push(self, reply):
        self.pushed.append(reply)
        return True

    async def extend_timeout(self, seconds):
        self.extended.append(seconds)
        if self.on_extend is not None:
            self.on_extend()

    async def stream(self, body, end_of_stream, metadata=None):
        self.streamed.append((body, end_of_stream, metadata))
        return True


def load(tmp_path, *callbacks, settings=""):
    """A pipeline whose callbacks are classes of HANDLERS (`h.<Name>`), plus any other config lines."""
    (tmp_path / "h.py").write_text(HANDLERS)
    lines = (
        [f"litellm_settings: {{callbacks: [{', '.join(f'h.{c}' for c in callbacks)}]}}"] if callbacks else []
    )
    (tmp_path / "config.yaml").write_text("\n".join([*lines, textwrap.dedent(settings)]) + "\n")
    return pipeline.load(tmp_path / "config.yaml")


def handler(built, name):
    return next(h.instance for h in built.chain.handlers if h.reference == f"h.{name}")


def session_of(built):
    outbox = Outbox()
    return Session(built, outbox), outbox


def request_headers(path="/v1/chat/completions", method="POST", end_of_stream=False, **headers):
    values = {
        ":path": path,
        ":method": method,
        "content-type": "application/json",
        "x-request-id": "req-1",
        **headers,
    }
    return Message(values, b"", end_of_stream)


def body(value, end_of_stream=True):
    return Message({}, value if isinstance(value, bytes) else orjson.dumps(value), end_of_stream)


def response_headers(status=200, content_type="application/json"):
    return Message({":status": str(status), "content-type": content_type}, b"", False)


async def request(session, value=CHAT, path="/v1/chat/completions"):
    """The request side; the answer to the body."""
    decision, more = await session.handle(Phase.REQUEST_HEADERS, request_headers(path))
    assert isinstance(decision, Continue) and more is True
    return await session.handle(Phase.REQUEST_BODY, body(value))


async def settle(built):
    """Wait for what the chain runs in the background (logging events, endings after a close)."""
    chain = built.chain
    while chain.background:
        await asyncio.gather(*list(chain.background))


def error_of(reply):
    return orjson.loads(reply.body)["error"]


def requests_total(outcome):
    labels = {"call_type": "completion", "outcome": outcome}
    return REGISTRY.get_sample_value("llm_extproc_requests_total", labels) or 0.0


# ---- pass-through ----


@pytest.mark.parametrize(
    "message",
    [
        request_headers("/v1/models", "GET", end_of_stream=True),
        request_headers("/v1/chat/completions", "GET", end_of_stream=True),
        request_headers("/healthz"),
    ],
)
async def test_a_non_llm_request_passes_through_and_nothing_more_comes(tmp_path, message):
    built = load(tmp_path, "Reads")
    session, outbox = session_of(built)
    assert await session.handle(Phase.REQUEST_HEADERS, message) == (Continue(mode=PASS_THROUGH_MODE), False)
    session.close()
    await settle(built)
    assert handler(built, "Reads").calls == 0
    assert outbox.pushed == outbox.extended == outbox.streamed == []


async def test_with_nothing_configured_even_an_llm_request_passes_through(tmp_path):
    session, _ = session_of(load(tmp_path, settings="general_settings: {enforce_user_param: false}"))
    assert await session.handle(Phase.REQUEST_HEADERS, request_headers()) == (
        Continue(mode=PASS_THROUGH_MODE),
        False,
    )


# ---- the request side ----


async def test_a_pre_call_hook_changing_the_body_sends_the_new_body_and_its_length(tmp_path):
    built = load(tmp_path, "Rewrite")
    session, _ = session_of(built)
    decision, more = await session.handle(Phase.REQUEST_HEADERS, request_headers())
    assert decision == Continue(mode=Mode(request_body=BodyMode.BUFFERED)) and more is True
    decision, more = await session.handle(Phase.REQUEST_BODY, body(CHAT))
    assert more is False  # pre-call hooks only: nothing is asked for after the request body
    assert isinstance(decision, Continue)
    assert orjson.loads(decision.body) == {**CHAT, "model": "my-new-model"}  # no sidecar keys upstream
    assert decision.set_headers == (("content-length", str(len(decision.body))),)
    assert decision.metadata["verdict"] == "modified"
    assert (decision.metadata["model"], decision.metadata["upstream_model"]) == ("m", "my-new-model")


async def test_a_pre_call_hook_that_changes_nothing_leaves_the_body_alone(tmp_path):
    built = load(tmp_path, "Reads")
    session, _ = session_of(built)
    decision, more = await request(session)
    assert (decision.body, decision.set_headers, more) == (None, (), False)
    assert decision.metadata["verdict"] == "pass"
    assert handler(built, "Reads").calls == 1


async def test_a_string_refusal_on_chat_is_a_200_completion(tmp_path):
    session, _ = session_of(load(tmp_path, "Refuse"))
    decision, more = await request(session)
    assert isinstance(decision, Reply) and more is False
    assert decision.status == 200
    answer = orjson.loads(decision.body)
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": "refused!"}
    assert decision.metadata == {
        "verdict": "refused",
        "refused_by": "h.Refuse.async_pre_call_hook",
        "call_type": "completion",
    }


async def test_a_string_refusal_on_embeddings_is_a_400_envelope(tmp_path):
    session, _ = session_of(load(tmp_path, "Refuse"))
    decision, more = await request(session, {"model": "m", "input": "x"}, "/v1/embeddings")
    assert isinstance(decision, Reply) and more is False
    assert decision.status == 400
    assert error_of(decision) == {
        "message": "refused!",
        "type": "invalid_request_error",
        "param": None,
        "code": "400",
    }
    assert decision.metadata["call_type"] == "embeddings"


async def test_an_http_exception_answers_with_its_status_and_tells_the_failure_hooks_once(tmp_path):
    built = load(tmp_path, "Forbid", "Failure")
    session, _ = session_of(built)
    decision, more = await request(session)
    assert isinstance(decision, Reply) and more is False
    assert decision.status == 403
    assert error_of(decision)["message"] == "forbidden"
    assert error_of(decision)["type"] == "permission_error"
    assert decision.metadata == {
        "verdict": "error",
        "status": 403,
        "failed_in": "h.Forbid.async_pre_call_hook",
    }
    session.close()  # the stream ends: the request had its ending already
    await settle(built)
    ((exc, request_data),) = handler(built, "Failure").seen
    assert isinstance(exc, HTTPException) and exc.status_code == 403
    assert request_data["litellm_call_id"] == "req-1"


async def test_enforce_user_param_refuses_with_401_before_any_pre_call_hook(tmp_path):
    built = load(tmp_path, "Reads", "Failure", settings="general_settings: {enforce_user_param: true}")
    session, _ = session_of(built)
    decision, more = await request(session)
    assert isinstance(decision, Reply) and more is False
    assert decision.status == 401
    assert error_of(decision) == {
        "message": ENFORCE_USER_MESSAGE,
        "type": "auth_error",
        "param": None,
        "code": "401",
    }
    assert handler(built, "Reads").calls == 0
    ((exc, request_data),) = handler(built, "Failure").seen
    assert isinstance(exc, ProxyException) and exc.status_code == 401
    assert request_data["litellm_call_id"] == "req-1"
    # with a user (an empty string counts), the same request goes on
    session, _ = session_of(built)
    decision, _ = await request(session, {**CHAT, "user": ""})
    assert isinstance(decision, Continue)
    assert handler(built, "Reads").calls == 1


async def test_an_unsupported_content_type_is_a_415_at_the_headers(tmp_path):
    session, _ = session_of(load(tmp_path, "Reads"))
    message = request_headers(**{"content-type": "text/plain"})
    decision, more = await session.handle(Phase.REQUEST_HEADERS, message)
    assert isinstance(decision, Reply) and more is False
    assert decision.status == 415
    error = error_of(decision)
    assert error["message"].startswith("Unsupported content-type 'text/plain'")
    assert error["param"] == "content-type"


# ---- the response side ----


async def test_the_response_header_hook_is_merged_once_into_the_final_answer(tmp_path):
    built = load(tmp_path, "Headers", "Success")
    session, _ = session_of(built)
    decision, more = await request(session)
    assert decision.set_headers == () and more is True
    decision, more = await session.handle(Phase.RESPONSE_HEADERS, response_headers())
    assert decision == Continue(mode=ANSWER_BUFFERED) and more is True  # the body decides the headers
    decision, more = await session.handle(Phase.RESPONSE_BODY, body(ANSWER))
    assert more is False
    assert decision.set_headers == (("x-hook", "1"),)
    (seen,) = handler(built, "Headers").seen
    assert seen.id == "upstream"  # the answer as the success hooks left it


async def test_without_a_body_reader_the_response_headers_answer_carries_the_hooks_headers(tmp_path):
    built = load(tmp_path, "Headers")
    session, _ = session_of(built)
    await request(session)
    decision, more = await session.handle(Phase.RESPONSE_HEADERS, response_headers())
    assert decision == Continue(set_headers=(("x-hook", "1"),)) and more is False
    session.close()
    assert len(handler(built, "Headers").seen) == 1


async def test_the_response_header_hook_is_merged_into_an_error_reply(tmp_path):
    built = load(tmp_path, "Forbid", "Headers")
    session, _ = session_of(built)
    decision, _ = await request(session)
    assert isinstance(decision, Reply) and decision.status == 403
    assert ("x-hook", "1") in decision.headers
    assert handler(built, "Headers").seen == [None]  # no answer to show it


async def test_a_buffered_success_hook_replaces_the_answer(tmp_path):
    built = load(tmp_path, "Success")
    handler(built, "Success").replacement = {"id": "replaced", "choices": []}
    session, _ = session_of(built)
    await request(session)
    decision, more = await session.handle(Phase.RESPONSE_HEADERS, response_headers())
    assert decision == Continue(mode=ANSWER_BUFFERED) and more is True
    decision, more = await session.handle(Phase.RESPONSE_BODY, body(ANSWER))
    assert more is False
    assert orjson.loads(decision.body) == {"id": "replaced", "choices": []}
    assert decision.set_headers == (("content-length", str(len(decision.body))),)
    assert decision.metadata == {
        "upstream_status": 200,
        "prompt_tokens": 2,
        "completion_tokens": 1,
        "total_tokens": 3,
        "verdict": "modified",
    }
    assert handler(built, "Success").seen == ["upstream"]


@pytest.mark.parametrize("replaced", [False, True])
async def test_an_upstream_error_passes_through_unless_a_failure_hook_replaces_it(tmp_path, replaced):
    built = load(tmp_path, "Failure")
    if replaced:
        handler(built, "Failure").replacement = HTTPException(503, "replaced by a failure hook")
    session, _ = session_of(built)
    await request(session)
    decision, more = await session.handle(Phase.RESPONSE_HEADERS, response_headers(500))
    assert decision == Continue(mode=ANSWER_BUFFERED) and more is True  # the failure hooks read it
    upstream_error = {"error": {"message": "upstream broke", "type": "server_error"}}
    decision, more = await session.handle(Phase.RESPONSE_BODY, body(upstream_error))
    assert more is False
    metadata = {"verdict": "upstream_error", "upstream_status": 500}
    if replaced:
        assert isinstance(decision, Reply)
        assert decision.status == 503
        assert error_of(decision)["message"] == "replaced by a failure hook"
        assert decision.metadata == metadata
    else:
        assert decision == Continue(metadata=metadata)
    ((exc, _),) = handler(built, "Failure").seen
    assert isinstance(exc, UpstreamError)
    assert (exc.status_code, exc.message, exc.body) == (500, "upstream broke", upstream_error)


async def test_a_request_waiting_for_its_response_ends_as_disconnected_when_closed(tmp_path):
    built = load(tmp_path, "Failure")
    session, _ = session_of(built)
    decision, more = await request(session)
    assert isinstance(decision, Continue) and more is True  # the response is still to come
    before = requests_total("disconnected")
    session.close()
    assert requests_total("disconnected") - before == 1  # ended at once; the hooks are told meanwhile
    await settle(built)
    ((exc, request_data),) = handler(built, "Failure").seen
    assert isinstance(exc, ClientDisconnected) and exc.status_code == 499
    assert request_data["messages"] == CHAT["messages"]


# ---- moderation: the outbox ----


async def test_a_moderation_refusal_is_pushed_before_the_next_message(tmp_path):
    built = load(tmp_path, "Moderator", "Failure")
    session, outbox = session_of(built)
    decision, more = await request(session)
    assert isinstance(decision, Continue) and more is True  # released upstream at once
    await session.before_next_message()
    (reply,) = outbox.pushed
    assert reply.status == 400 and error_of(reply)["message"] == "flagged"
    assert reply.metadata["failed_in"] == "h.Moderator.async_moderation_hook"
    session.close()
    await settle(built)
    assert len(handler(built, "Failure").seen) == 1


async def test_a_late_moderation_verdict_extends_envoys_timeout_and_answers_the_response_headers(tmp_path):
    built = load(tmp_path, "Moderator")
    gate = handler(built, "Moderator").gate = asyncio.Event()
    session, outbox = session_of(built)
    outbox.on_extend = gate.set  # the verdict comes only once the session asked Envoy to wait
    await request(session)
    decision, more = await session.handle(Phase.RESPONSE_HEADERS, response_headers())
    assert outbox.extended == [built.moderation_wait_s]
    assert isinstance(decision, Reply) and more is False
    assert decision.status == 400
    assert outbox.pushed == []  # answered in place of the response headers, not pushed


async def test_a_body_in_parts_is_refused_never_passed_on_unhooked(tmp_path):
    built = load(tmp_path, "Reads")
    session, _ = session_of(built)
    await session.handle(Phase.REQUEST_HEADERS, request_headers())
    decision, more = await session.handle(Phase.REQUEST_BODY, body(CHAT, end_of_stream=False))
    assert isinstance(decision, Reply) and decision.status == 500 and not more
    assert "BUFFERED" in error_of(decision)["message"]
    assert handler(built, "Reads").calls == 0


async def test_a_lone_body_on_a_route_that_names_no_endpoint_is_refused(tmp_path):
    built = load(tmp_path, "Rewrite", settings="extproc: {forward_headers: [x-team-id]}")
    session, _ = session_of(built)  # no stream metadata: no x-llm-endpoint
    decision, more = await session.handle(Phase.REQUEST_BODY, body(CHAT))
    assert isinstance(decision, Reply) and decision.status == 500 and not more
    assert "x-llm-endpoint" in error_of(decision)["message"]
