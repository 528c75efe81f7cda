"""Vendor guardrail names mapped to built-ins (extproc/hooks/vendors.py): what maps, with which options,
and what is refused by name."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from extproc.errors import HandlerError
from extproc.hooks.vendors import PRESIDIO_ENTITIES, VENDOR_GUARDRAILS, builtin_for
from extproc.settings.guardrails import GuardrailEntry, parse_guardrails
from handlers import keyword_moderation, llm_judge, pii
from handlers.generic_guardrail_api import GenericGuardrailAPI


def entry(guardrail: str, **params: Any) -> GuardrailEntry:
    (parsed,) = parse_guardrails(
        [{"guardrail_name": "g", "litellm_params": {"guardrail": guardrail, **params}}]
    )
    return parsed


def build(parsed: GuardrailEntry) -> Any:
    """The built-in as the loader builds it: its class with the translated options."""
    reference, options = builtin_for(parsed)
    module, _, name = reference.rpartition(".")
    return getattr(importlib.import_module(module), name)(**options)


def test_every_mapped_reference_names_an_existing_class() -> None:
    for reference, _ in VENDOR_GUARDRAILS.values():
        module, _, name = reference.rpartition(".")
        assert isinstance(getattr(importlib.import_module(module), name), type), reference


# ---- generic_guardrail_api ----
def test_generic_guardrail_api_keeps_its_options_and_takes_a_deadline_inside_the_entrys() -> None:
    parsed = entry(
        "generic_guardrail_api",
        mode=["pre_call", "post_call"],
        api_base="http://guard:8080",
        api_key="k",
        additional_provider_specific_params={"a": 1},
        timeout=2,
        unreachable_fallback="fail_open",
    )
    reference, options = builtin_for(parsed)
    assert reference == "handlers.generic_guardrail_api.GenericGuardrailAPI"
    assert options == {
        "api_base": "http://guard:8080",
        "api_key": "k",
        "additional_provider_specific_params": {"a": 1},
        "timeout": pytest.approx(1.8),
    }
    built = build(parsed)
    assert isinstance(built, GenericGuardrailAPI)
    assert built.headers["x-api-key"] == "k"


# ---- presidio -> handlers.pii ----
def test_presidio_entities_and_actions_translate_to_pii_entities() -> None:
    parsed = entry(
        "presidio",
        mode="pre_call",
        presidio_analyzer_api_base="http://analyzer:5002",
        presidio_anonymizer_api_base="http://anonymizer:5001",
        pii_entities_config={"EMAIL_ADDRESS": "MASK", "CREDIT_CARD": "BLOCK", "IP_ADDRESS": "MASK"},
    )
    reference, options = builtin_for(parsed)
    assert reference == "handlers.pii.Handler"
    assert options == {
        "entities": {"email": "mask", "credit_card": "block", "ipv4": "mask", "ipv6": "mask"},
        "responses": False,
    }
    built = build(parsed)
    assert isinstance(built, pii.Handler)
    assert built.actions == options["entities"]


def test_presidio_on_post_call_or_apply_to_output_masks_answers_too() -> None:
    on_answers = build(
        entry("presidio", mode=["pre_call", "post_call"], pii_entities_config={"US_SSN": "MASK"})
    )
    assert type(on_answers).__name__ == "_ResponseMasking"
    _, options = builtin_for(
        entry("presidio", mode="pre_call", apply_to_output=True, pii_entities_config={"PHONE_NUMBER": "MASK"})
    )
    assert options["responses"] is True


def test_every_presidio_entity_we_map_is_one_pii_detects() -> None:
    for ours in PRESIDIO_ENTITIES.values():
        assert set(ours) <= set(pii.ENTITIES)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"mode": "pre_call", "pii_entities_config": {"PERSON": "MASK"}}, r"pii_entities_config\.PERSON: .*does not detect"),
        ({"mode": "pre_call"}, r"pii_entities_config: required.*names, places"),
        ({"mode": "pre_call", "pii_entities_config": {"EMAIL_ADDRESS": "HASH"}}, r"'HASH' is neither MASK nor BLOCK"),
        ({"mode": "pre_call", "output_parse_pii": True, "pii_entities_config": {"US_SSN": "MASK"}}, r"output_parse_pii"),
        ({"mode": "pre_call", "presidio_ad_hoc_recognizers": "r.json", "pii_entities_config": {"US_SSN": "MASK"}}, r"presidio_ad_hoc_recognizers: .*option"),
        ({"mode": "during_call", "pii_entities_config": {"US_SSN": "MASK"}}, r"mode: 'presidio'.*not 'during_call'"),
        ({"pii_entities_config": {"US_SSN": "MASK"}}, r"mode: required"),
    ],
)  # fmt: skip
def test_presidio_refuses_what_pii_cannot_do(params: dict[str, Any], message: str) -> None:
    with pytest.raises(HandlerError, match=message) as caught:
        builtin_for(entry("presidio", **params))
    assert str(caught.value).startswith("guardrails[0].litellm_params")


# ---- litellm_content_filter -> handlers.keyword_moderation ----
async def test_content_filter_words_match_anywhere_in_any_case_and_regexes_as_written() -> None:
    parsed = entry(
        "litellm_content_filter",
        mode="during_call",
        blocked_words=[{"keyword": "secret.project", "action": "BLOCK"}],
        patterns=[{"pattern_type": "regex", "pattern": r"ID-\d{4}", "name": "ids", "action": "BLOCK"}],
    )
    built = build(parsed)
    assert isinstance(built, keyword_moderation.Handler)

    async def refused(text: str) -> bool:
        data = {"model": "m", "messages": [{"role": "user", "content": text}]}
        try:
            await built.async_moderation_hook(data, None, "completion")  # type: ignore[arg-type]
        except Exception as exc:
            return getattr(exc, "status_code", None) == 400
        return False

    assert await refused("about the TopSecret.Projects plan")  # a substring, any case, as LiteLLM matches
    assert not await refused("about the secret-project plan")  # the dot is literal
    assert await refused("my ID-1234")
    assert not await refused("my id-1234")  # regexes keep their case


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"mode": "pre_call", "blocked_words": [{"keyword": "x", "action": "BLOCK"}]}, r"not 'pre_call'"),
        ({"mode": "during_call", "blocked_words": [{"keyword": "x", "action": "MASK"}]}, r"blocked_words\[0\]\.action: only BLOCK"),
        ({"mode": "during_call", "patterns": [{"pattern_type": "prebuilt", "pattern_name": "us_ssn"}]}, r"patterns\[0\]: only `pattern_type: regex`"),
        ({"mode": "during_call", "categories": [{"category": "harmful_violence"}]}, r"categories: .*option"),
        ({"mode": "during_call"}, r"no blocked_words or patterns"),
    ],
)  # fmt: skip
def test_content_filter_refuses_what_keyword_moderation_cannot_do(
    params: dict[str, Any], message: str
) -> None:
    with pytest.raises(HandlerError, match=message):
        builtin_for(entry("litellm_content_filter", **params))


# ---- openai_moderation -> handlers.llm_judge ----
def test_openai_moderation_maps_to_the_judge_in_moderations_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_BASE", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    parsed = entry("openai_moderation", mode="during_call", model="text-moderation-latest", timeout=3)
    reference, options = builtin_for(parsed)
    assert reference == "handlers.llm_judge.Handler"
    assert options == {
        "base_url": "https://api.openai.com/v1",
        "api_key": "sk-env",
        "mode": "moderations",
        "model": "text-moderation-latest",
        "fail_open": False,
        "timeout_ms": 3000,
    }
    built = build(parsed)
    assert isinstance(built, llm_judge.Handler)
    assert built.api_base == "https://api.openai.com/v1"
    open_judge = build(
        entry("openai_moderation", mode="during_call", api_base="http://m:1", fail_on_error=False)
    )
    assert open_judge.fail_open is True
    assert open_judge.api_base == "http://m:1/v1"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"mode": "pre_call"}, r"mode: 'openai_moderation'.*not 'pre_call'"),
        ({"mode": ["during_call", "post_call"]}, r"not 'post_call'"),
        ({"mode": "during_call", "unreachable_fallback": "fail_open"}, r"unreachable_fallback: .*cannot tell"),
        ({"mode": "during_call", "categories": ["violence"]}, r"categories: .*option"),
    ],
)  # fmt: skip
def test_openai_moderation_refuses_what_the_judge_cannot_do(params: dict[str, Any], message: str) -> None:
    with pytest.raises(HandlerError, match=message):
        builtin_for(entry("openai_moderation", **params))


# ---- everything else ----
@pytest.mark.parametrize("name", ["lakera_v2", "bedrock", "aporia", "azure/prompt_shield", "made-up"])
def test_a_vendor_we_do_not_have_fails_naming_it(name: str) -> None:
    with pytest.raises(HandlerError) as caught:
        builtin_for(entry(name, mode="pre_call"))
    message = str(caught.value)
    assert message.startswith("guardrails[0].litellm_params.guardrail: ")
    assert repr(name) in message
    assert "generic_guardrail_api" in message  # says what to do instead


def test_hide_secrets_is_refused_with_why_not_silently_narrowed() -> None:
    with pytest.raises(HandlerError, match=r"'hide-secrets': .*detect-secrets.*entities: \{secret: mask\}"):
        builtin_for(entry("hide-secrets", mode="pre_call"))
