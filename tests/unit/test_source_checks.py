"""`check`'s reading of handler files: call_type compared with a name of the set not in force."""

from __future__ import annotations

import textwrap
from pathlib import Path

from extproc.hooks.source_checks import (
    call_type_findings,
    handler_call_type_warnings,
    uncalled_hook_warnings,
)
from extproc.request import pipeline
from extproc.types import CallTypeNames

SOURCE = textwrap.dedent(
    """
    class Handler:
        async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
            if call_type == "completion":                            # line 4: documented only
                return "no"
            if "embeddings" != call_type:                            # line 6: either side
                pass
            if call_type in ("moderation", "amoderation"):           # line 8: both: fine
                pass
            if kwargs.get("call_type") in ["image_generation"]:      # line 10: log kwargs
                pass
            match call_type:
                case "text_completion" | "other":                    # line 13: a match case
                    pass
            if model == "completion":                                # line 15: not a call_type
                pass
            if call_type == "acompletion":                           # line 17: proxy only
                pass
    """
)


def lines_of(findings: list[str]) -> list[int]:
    return [int(finding.split(":")[1]) for finding in findings]


def test_under_proxy_names_documented_comparisons_are_reported_with_what_to_write():
    findings = call_type_findings(SOURCE, "h.py", CallTypeNames.PROXY)
    assert lines_of(findings) == [4, 6, 10, 13]
    assert findings[0] == (
        "h.py:4: call_type compared with 'completion', but hooks receive 'acompletion' "
        "(extproc.call_types: proxy); write 'acompletion', or both ('completion', 'acompletion'), "
        "or set extproc.call_types: documented"
    )
    assert "'aembedding'" in findings[1] and "'aimage_generation'" in findings[2]
    assert "'atext_completion'" in findings[3]


def test_under_documented_names_proxy_comparisons_are_reported():
    findings = call_type_findings(SOURCE, "h.py", CallTypeNames.DOCUMENTED)
    assert lines_of(findings) == [17]
    assert "hooks receive 'completion'" in findings[0]
    assert "set extproc.call_types: proxy" in findings[0]


def test_a_file_that_does_not_parse_is_left_to_its_import_error():
    assert call_type_findings("def (:\n", "bad.py", CallTypeNames.PROXY) == []


def test_loaded_handlers_files_are_read(tmp_path: Path):
    (tmp_path / "hooks_written_for_docs.py").write_text(
        "from extproc import CustomLogger\n"
        "class H(CustomLogger):\n"
        "    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):\n"
        "        if call_type == 'completion':\n"
        "            return 'refused'\n"
        "h = H()\n"
        "again = H()\n"
    )
    config = tmp_path / "config.yaml"
    config.write_text(
        "litellm_settings:\n  callbacks: [hooks_written_for_docs.h, hooks_written_for_docs.again]\n"
    )
    built = pipeline.load(config)
    instances = [handler.instance for handler in built.chain.handlers]
    warnings = handler_call_type_warnings(instances, built.config.sidecar.call_types)
    assert len(warnings) == 1  # one file, read once
    assert warnings[0].startswith(
        f"{tmp_path / 'hooks_written_for_docs.py'}:4: call_type compared with 'completion'"
    )
    assert handler_call_type_warnings(instances, CallTypeNames.DOCUMENTED) == []


def test_the_built_in_handlers_are_clean_under_both_namings():
    import handlers.keyword_moderation
    import handlers.llm_judge
    import handlers.pii
    import handlers.rate_limiter

    modules = (handlers.keyword_moderation, handlers.llm_judge, handlers.pii, handlers.rate_limiter)
    for names in CallTypeNames:
        for module in modules:
            source = Path(str(module.__file__)).read_text()
            assert call_type_findings(source, str(module.__file__), names) == []


def test_an_overridden_hook_the_sidecar_never_calls_is_a_warning():
    from extproc import CustomLogger

    class Deployment(CustomLogger):
        async def async_pre_call_deployment_hook(self, kwargs, call_type):
            return kwargs

        def log_success_event(self, kwargs, response_obj, start_time, end_time):
            return None

    class Child(Deployment):
        pass

    warnings = uncalled_hook_warnings([Deployment(), Child(), CustomLogger()])
    assert len(warnings) == 4  # two methods for each class that has them; the base class has none
    assert any(
        w.endswith("Deployment.async_pre_call_deployment_hook: not called: runs inside LiteLLM's router per "
                   "deployment; use the async_pre_call_hook / post-call hooks") for w in warnings
    )  # fmt: skip
    assert any("Child.log_success_event: not called: write async_log_success_event" in w for w in warnings)
