"""`verbose_proxy_logger` and `verbose_logger`: the loggers LiteLLM hook files write to.

Plain `logging` loggers under the sidecar's `extproc` tree, so the sidecar's log level and format (JSON
or text) apply to what handlers log, and each record names the LiteLLM logger it stands for.
"""

from __future__ import annotations

import logging

verbose_proxy_logger = logging.getLogger("extproc.litellm.proxy")  # LiteLLM's "LiteLLM Proxy"
verbose_logger = logging.getLogger("extproc.litellm")  # LiteLLM's "LiteLLM"
verbose_router_logger = logging.getLogger("extproc.litellm.router")  # LiteLLM's "LiteLLM Router"
