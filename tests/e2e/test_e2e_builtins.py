"""The built-in handlers switched on by name in config, through a real Envoy, sidecar and mock upstream.

`handlers.pii` and `handlers.keyword_moderation` share one stack; the LLM judge stacks (one per mode)
reuse that stack's mock upstream both as their upstream and as the judge, which answers like OpenAI's
moderations endpoint and, for models named "...guard...", like Llama Guard (both flag "violence").
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
E2EStack = Any  # tests/conftest.py's stack (conftest is not importable as a module)
StackFactory = Any
pytestmark = pytest.mark.e2e

PII_CONFIG = """
litellm_settings:
  callbacks: [handlers.pii, handlers.keyword_moderation]
extproc:
  handlers:
    handlers.pii: {options: {entities: {email: mask, credit_card: block}, responses: true}}
    handlers.keyword_moderation: {options: {block: [forbidden], allow: [forbidden fruit]}}
"""

JUDGE_CONFIG = """
litellm_settings:
  callbacks: [handlers.llm_judge]
extproc:
  handlers:
    handlers.llm_judge:
      options: {{base_url: "{url}", mode: {mode}, model: {model}, api_key: os.environ/E2E_JUDGE_KEY}}
environment_variables:
  E2E_JUDGE_KEY: sk-judge-e2e
"""
JUDGE_MODELS = {"moderations": "omni-moderation-latest", "llama_guard": "llama-guard-3-8b"}
CARD = "4111 1111 1111 1111"


def chat(text: str, model: str = "gpt-4o", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def content_of(response: Any) -> str:
    result: str = response.json()["choices"][0]["message"]["content"]
    return result


def streamed(response: Any) -> str:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    pieces = []
    for line in response.text.splitlines():
        if line.startswith("data: {"):
            for choice in json.loads(line[len("data: ") :])["choices"]:
                pieces.append(choice["delta"].get("content") or "")
    assert response.text.rstrip().endswith("data: [DONE]")
    return "".join(pieces)


@pytest.fixture(scope="module")
def stack(e2e_stack: StackFactory) -> E2EStack:
    return e2e_stack(PII_CONFIG)


@pytest.fixture(scope="module", params=["moderations", "llama_guard"])
def judge(request: pytest.FixtureRequest, e2e_stack: StackFactory, stack: E2EStack) -> tuple[E2EStack, str]:
    """A stack whose only callback is the judge, in one mode, and that mode."""
    mode: str = request.param
    config = JUDGE_CONFIG.format(url=stack.mock_url, mode=mode, model=JUDGE_MODELS[mode])
    return e2e_stack(config, upstream=stack.mock_url), mode


# ---- handlers.pii ----
def test_email_is_masked_before_the_upstream(stack: E2EStack) -> None:
    stack.mock_clear()
    response = stack.http.post("/v1/chat/completions", json=chat("write to john.doe@example.com please"))
    assert response.status_code == 200, response.text
    upstream = stack.mock_last()
    assert upstream is not None
    assert upstream["json"]["messages"] == [{"role": "user", "content": "write to <EMAIL> please"}]
    assert "metadata" not in upstream["json"]
    assert "john.doe" not in upstream["body"]
    assert content_of(response) == "[mock:gpt-4o] write to <EMAIL> please"


def test_embeddings_input_is_masked(stack: E2EStack) -> None:
    body = {"model": "text-embedding-3-small", "input": ["a@b.io", "no pii here"]}
    response = stack.http.post("/v1/embeddings", json=body)
    assert response.status_code == 200, response.text
    upstream = stack.mock_last()
    assert upstream is not None and upstream["json"]["input"] == ["<EMAIL>", "no pii here"]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_card_number_is_refused_and_nothing_goes_upstream(
    stack: E2EStack, assert_error: Any, stream: bool
) -> None:
    stack.mock_clear()
    body = chat(f"charge {CARD} to a@b.io", stream=stream)
    response = stack.http.post("/v1/chat/completions", json=body)
    error = assert_error(response, 400, message="Request blocked: it contains credit_card")
    assert error["type"] == "invalid_request_error"
    assert error["provider_specific_fields"] == {
        "error": "Request blocked: it contains credit_card",
        "entity": "credit_card",
    }
    assert CARD not in response.text
    assert stack.mock_requests() == []


def test_a_number_failing_luhn_goes_through(stack: E2EStack) -> None:
    response = stack.http.post("/v1/chat/completions", json=chat("order 4111 1111 1111 1112"))
    assert response.status_code == 200, response.text
    assert content_of(response) == "[mock:gpt-4o] order 4111 1111 1111 1112"


# With `responses: true` answers are masked too. The mock echoes the model name, which no request hook
# looks at, so an address there reaches the answer unless the response hooks catch it.
def test_answers_are_masked(stack: E2EStack) -> None:
    response = stack.http.post("/v1/chat/completions", json=chat("hi there", model="bot@example.com"))
    assert response.status_code == 200, response.text
    assert content_of(response) == "[mock:<EMAIL>] hi there"
    assert int(response.headers["content-length"]) == len(response.content)


@pytest.mark.parametrize("chunks", ["1", "7", "40"])
def test_streamed_answers_are_masked_however_they_are_cut(stack: E2EStack, chunks: str) -> None:
    body = chat("hi there, how are you today?", model="bot@example.com", stream=True)
    response = stack.http.post("/v1/chat/completions", json=body, headers={"x-mock-chunks": chunks})
    assert streamed(response) == "[mock:<EMAIL>] hi there, how are you today?"
    assert "bot@example" not in response.text.replace('"model":"bot@example.com"', "")


# ---- handlers.keyword_moderation ----
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_keyword_moderation_refuses(stack: E2EStack, assert_error: Any, stream: bool) -> None:
    response = stack.http.post(
        "/v1/chat/completions", json=chat("tell me the FORBIDDEN thing", stream=stream)
    )
    error = assert_error(response, 400, message="Violated content policy", kind="invalid_request_error")
    assert error["provider_specific_fields"] == {
        "error": "Violated content policy",
        "category": "keyword",
        "match": "forbidden",
    }
    assert "[mock:" not in response.text
    assert "FORBIDDEN thing" not in response.text


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_keyword_allow_rule_lets_it_through(stack: E2EStack, stream: bool) -> None:
    response = stack.http.post("/v1/chat/completions", json=chat("the forbidden fruit", stream=stream))
    text = streamed(response) if stream else content_of(response)
    assert text == "[mock:gpt-4o] the forbidden fruit"


def test_keyword_moderation_on_completions(stack: E2EStack, assert_error: Any) -> None:
    body = {"model": "gpt-3.5-turbo-instruct", "prompt": ["ok", "forbidden"]}
    assert_error(stack.http.post("/v1/completions", json=body), 400, message="Violated content policy")


# ---- handlers.llm_judge ----
def judge_calls(judge: E2EStack) -> list[dict[str, Any]]:
    return [r for r in judge.mock_requests() if r["json"] and r["json"].get("model") in JUDGE_MODELS.values()]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_judge_refuses_violence(judge: tuple[E2EStack, str], assert_error: Any, stream: bool) -> None:
    stack, mode = judge
    stack.mock_clear()
    response = stack.http.post("/v1/chat/completions", json=chat("describe the violence", stream=stream))
    error = assert_error(response, 400, message="Violated content safety policy")
    category = "violence" if mode == "moderations" else "Violent Crimes"
    assert error["provider_specific_fields"] == {
        "error": "Violated content safety policy",
        "category": category,
    }
    assert "[mock:" not in response.text
    [call] = judge_calls(stack)
    assert call["headers"]["authorization"] == "Bearer sk-judge-e2e"
    if mode == "moderations":
        assert call["path"] == "/v1/moderations"
        assert call["json"] == {"model": "omni-moderation-latest", "input": "describe the violence"}
    else:
        assert call["path"] == "/v1/chat/completions"
        assert "User: describe the violence" in call["json"]["messages"][0]["content"]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_judge_lets_the_rest_through(judge: tuple[E2EStack, str], stream: bool) -> None:
    stack, _ = judge
    stack.mock_clear()
    response = stack.http.post("/v1/chat/completions", json=chat("a poem about spring", stream=stream))
    text = streamed(response) if stream else content_of(response)
    assert text == "[mock:gpt-4o] a poem about spring"
    assert len(judge_calls(stack)) == 1


@pytest.mark.parametrize("where", ["tool-call-arguments", "system-message", "tool-description", "fullwidth"])
def test_judge_sees_every_user_controlled_string(
    judge: tuple[E2EStack, str], assert_error: Any, where: str
) -> None:
    """M5. Text the judge would flag in tool-call arguments, a system message, a tool definition or in
    fullwidth letters is judged like a user message's content and refused."""
    stack, _ = judge
    body = chat("hello")
    if where == "tool-call-arguments":
        call = {"id": "1", "type": "function", "function": {"name": "f", "arguments": '{"q": "violence"}'}}
        body["messages"].insert(0, {"role": "assistant", "content": None, "tool_calls": [call]})
    elif where == "system-message":
        body["messages"].insert(0, {"role": "system", "content": "describe the violence"})
    elif where == "tool-description":
        body["tools"] = [{"type": "function", "function": {"name": "f", "description": "violence"}}]
    else:
        body["messages"][0]["content"] = "".join(chr(ord(c) + 0xFEE0) for c in "violence")
    response = stack.http.post("/v1/chat/completions", json=body)
    assert_error(response, 400, message="Violated content safety policy")


# ---- llm-extproc check ----
def check(tmp_path: Path, options: str, callback: str = "handlers.pii") -> subprocess.CompletedProcess[str]:
    config = tmp_path / "config.yaml"
    config.write_text(
        f"litellm_settings:\n  callbacks: [{callback}]\n"
        f"extproc:\n  handlers:\n    {callback}: {{options: {options}}}\n"
    )
    command = [str(REPO / ".venv" / "bin" / "llm-extproc"), "check", "--config", str(config)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize(
    ("callback", "options", "expected"),
    [
        (
            "handlers.pii",
            "{entities: {email: erase}}",
            "entities.email: 'erase' is neither 'mask' nor 'block'",
        ),
        (
            "handlers.keyword_moderation",
            "{block: ['/(/']}",
            "block[0]: '/(/' is not a valid regular expression",
        ),
        ("handlers.llm_judge", "{mode: moderations}", "base_url: required"),
    ],
)
def test_check_names_the_handler_and_the_bad_option(
    tmp_path: Path, callback: str, options: str, expected: str
) -> None:
    result = check(tmp_path, options, callback)
    assert result.returncode != 0, result.stdout
    output = result.stdout + result.stderr
    assert callback in output and expected in output, output
    assert "Traceback" not in output


def test_check_accepts_good_options(tmp_path: Path) -> None:
    result = check(tmp_path, "{entities: {email: mask, iban: block}, mask_format: '[{ENTITY}]'}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "ok"
