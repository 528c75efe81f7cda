"""Fixtures of the process suites, on top of `harness`: pipelines loaded from config text and handler files
written to the test's own folder."""

from collections.abc import Callable

import pytest

from extproc.request.pipeline import Pipeline

from .harness import make_pipeline

PipelineLoader = Callable[..., Pipeline]


@pytest.fixture
def load_pipeline(tmp_path) -> PipelineLoader:
    """`load_pipeline(config_text, {"h.py": source})`: the pipeline of a config (and its handler files)
    written to the test's folder; each test loads the smallest config it needs."""

    def load(config_text: str, handlers: dict[str, str] | None = None) -> Pipeline:
        return make_pipeline(tmp_path, config_text, handlers)

    return load
