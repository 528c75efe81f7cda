"""Every YAML snippet of the README's built-in handler sections loads as a config, as pasted.

Each is written to a config file alone and loaded the way `check` and `serve` load one (the config
loader, then every handler with its options), with no warning: a snippet with an option a handler
rejects, or options for a handler its `callbacks` do not name (which would do nothing), fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from extproc.request import pipeline as pipeline_module

README = Path(__file__).resolve().parents[2] / "README.md"
_YAML_BLOCK = re.compile(r"```yaml\n(.*?)```", re.DOTALL)


def section(title: str) -> str:
    """The README's `## title` section, up to the next `## ` heading."""
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


SNIPPETS = _YAML_BLOCK.findall(section("Built-in handlers"))


def first_line(snippet: str) -> str:
    return next(line for line in snippet.splitlines() if line.strip())


def test_the_sections_hold_the_snippets():
    assert len(SNIPPETS) >= 6  # rate limiter, pii, keyword moderation, llm judge, routing, cache
    named = {
        name
        for snippet in SNIPPETS
        for name in (yaml.safe_load(snippet).get("extproc") or {}).get("handlers", {})
    }
    assert named == {
        "handlers.rate_limiter",
        "handlers.pii",
        "handlers.keyword_moderation",
        "handlers.llm_judge",
    }


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[f"{i}:{first_line(s)}" for i, s in enumerate(SNIPPETS)])
def test_snippet_loads_with_its_handlers(snippet, tmp_path, monkeypatch):
    monkeypatch.setenv("GUARD_API_KEY", "sk-snippet-test")  # the llm_judge snippet reads it
    config = tmp_path / "config.yaml"
    config.write_text(snippet)
    pipeline = pipeline_module.load(config)
    assert pipeline.config.warnings == ()
    configured = set((yaml.safe_load(snippet).get("extproc") or {}).get("handlers", {}))
    loaded = {handler.reference for handler in pipeline.chain.handlers}
    assert configured <= loaded  # every handler given options runs


def test_the_rate_limiter_snippet_sets_its_tables(tmp_path):
    (snippet,) = [s for s in SNIPPETS if "handlers.rate_limiter:" in s]
    config = tmp_path / "config.yaml"
    config.write_text(snippet)
    (handler,) = [
        h for h in pipeline_module.load(config).chain.handlers if h.reference == "handlers.rate_limiter"
    ]
    limiter = handler.instance
    assert limiter.defaults["api_key"] == {"max_parallel_requests": 4, "rpm": 60, "tpm": 100000}
    assert limiter.keys == {"batch-jobs": {"rpm": 600}}
    assert limiter.teams == {"team-a": {"tpm": 1000000}}
