"""Model routing through a real Envoy: each deployment's api_base is its own cluster."""

import subprocess
import sys

import httpx
import pytest

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def second_mock():
    process = subprocess.Popen(
        [sys.executable, "-m", "extproc", "mock-upstream", "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    line = process.stdout.readline()
    assert line.startswith("mock-upstream listening on "), line
    yield line.split()[-1]
    process.terminate()
    process.wait(10)
    process.stdout.close()


@pytest.fixture(scope="module")
def stack(e2e_stack, second_mock):
    return e2e_stack(f"""
        model_list:
          - model_name: gpt-4o
            litellm_params: {{model: openai/gpt-4o-2024-08-06, api_base: "{second_mock}"}}
            model_info: {{id: second}}
          - model_name: gpt-4o
            litellm_params: {{model: openai/gpt-4o-2024-08-06}}
            model_info: {{id: default}}
        extproc:
          routing: true
    """)


def chat(model):
    return {"model": model, "messages": [{"role": "user", "content": "hi"}]}


def test_requests_alternate_between_deployments_and_show_the_public_name(stack, second_mock):
    with httpx.Client(trust_env=False, timeout=10) as direct:
        direct.delete(f"{second_mock}/__mock/requests")
        stack.mock_clear()
        for _ in range(4):
            response = stack.http.post("/v1/chat/completions", json=chat("gpt-4o"))
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["model"] == "gpt-4o"  # the public name, though the upstream saw another
            assert "[mock:gpt-4o-2024-08-06]" in body["choices"][0]["message"]["content"]
            assert response.headers["content-length"] == str(len(response.content))
        on_second = direct.get(f"{second_mock}/__mock/requests").json()
    on_default = stack.mock_requests()
    assert len(on_second) == 2 and len(on_default) == 2
    for record in on_second + on_default:
        assert record["json"]["model"] == "gpt-4o-2024-08-06"
    assert {r["headers"]["x-llm-deployment"] for r in on_second} == {"second"}


def test_a_streamed_answer_shows_the_public_name_too(stack):
    response = stack.http.post("/v1/chat/completions", json={**chat("gpt-4o"), "stream": True})
    assert response.status_code == 200
    events = [e for e in response.text.split("\n\n") if e.startswith("data: {")]
    assert events and all('"model":"gpt-4o"' in e for e in events)


def test_unknown_model_is_a_400_and_nothing_goes_upstream(stack):
    stack.mock_clear()
    response = stack.http.post("/v1/chat/completions", json=chat("gpt-5"))
    assert response.status_code == 400
    assert "Invalid model name passed in model=gpt-5" in response.json()["error"]["message"]
    assert stack.mock_requests() == []
