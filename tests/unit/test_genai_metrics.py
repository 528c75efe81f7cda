"""The GenAI histograms: semantic-convention names, and labels a client cannot grow."""

import pytest
from prometheus_client import REGISTRY

from extproc.request import pipeline
from extproc.telemetry import metrics

CONFIG = """
model_list:
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o}
  - model_name: claude
    litellm_params: {model: anthropic/claude-sonnet}
"""


def count(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def listed(tmp_path):
    """The model names of a built pipeline's `model_list` are the allowed labels."""
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    pipeline.load(path)
    yield
    metrics.use_models(())


def test_building_a_pipeline_allows_exactly_its_model_list_names(listed):
    assert metrics.model_label("gpt-4o") == "gpt-4o"
    assert metrics.model_label("claude") == "claude"
    # The upstream name, an unknown name, a non-string: all one bounded value.
    for model in ("openai/gpt-4o", "gpt-4o-2024", "x" * 500, None, 7, ["gpt-4o"]):
        assert metrics.model_label(model) == "other"


def test_a_request_records_duration_tokens_and_first_token(listed):
    labels = {"call_type": "completion", "gen_ai_request_model": "gpt-4o", "outcome": "success"}
    before = {
        "duration": count("gen_ai_client_operation_duration_seconds_count", **labels),
        "duration_sum": count("gen_ai_client_operation_duration_seconds_sum", **labels),
        "input": count("gen_ai_client_token_usage_sum", **labels, gen_ai_token_type="input"),
        "output": count("gen_ai_client_token_usage_sum", **labels, gen_ai_token_type="output"),
        "first": count("gen_ai_server_time_to_first_token_seconds_count", **labels),
    }
    metrics.record_request(
        "completion", "gpt-4o", "success", {"prompt_tokens": 12, "completion_tokens": 30}, 0.5, 0.05
    )
    assert count("gen_ai_client_operation_duration_seconds_count", **labels) - before["duration"] == 1
    # Other tests' requests may have summed durations already: the difference is exact only to a float's precision.
    assert count("gen_ai_client_operation_duration_seconds_sum", **labels) - before["duration_sum"] == pytest.approx(0.5)
    assert count("gen_ai_client_token_usage_sum", **labels, gen_ai_token_type="input") - before["input"] == 12
    assert (
        count("gen_ai_client_token_usage_sum", **labels, gen_ai_token_type="output") - before["output"] == 30
    )
    assert count("gen_ai_server_time_to_first_token_seconds_count", **labels) - before["first"] == 1


def test_messages_usage_names_count_and_missing_counts_are_not_invented(listed):
    labels = {"call_type": "anthropic_messages", "gen_ai_request_model": "claude", "outcome": "success"}
    before_input = count("gen_ai_client_token_usage_count", **labels, gen_ai_token_type="input")
    before_output = count("gen_ai_client_token_usage_count", **labels, gen_ai_token_type="output")
    before_first = count("gen_ai_server_time_to_first_token_seconds_count", **labels)
    metrics.record_request("anthropic_messages", "claude", "success", {"input_tokens": 9}, 0.2, None)
    assert count("gen_ai_client_token_usage_count", **labels, gen_ai_token_type="input") - before_input == 1
    assert count("gen_ai_client_token_usage_count", **labels, gen_ai_token_type="output") == before_output
    assert count("gen_ai_server_time_to_first_token_seconds_count", **labels) == before_first


def test_unknown_call_types_models_and_outcomes_fold_into_other(listed):
    labels = {"call_type": "other", "gen_ai_request_model": "other", "outcome": "other"}
    before = count("gen_ai_client_operation_duration_seconds_count", **labels)
    for i in range(50):
        metrics.record_request(f"ct-{i}", f"model-{i}", f"outcome-{i}", None, 0.01)
    assert count("gen_ai_client_operation_duration_seconds_count", **labels) - before == 50
    exposition = "\n".join(
        sample.labels.get("gen_ai_request_model", "")
        for family in REGISTRY.collect()
        for sample in family.samples
    )
    assert "model-1" not in exposition
