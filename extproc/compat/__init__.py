"""LiteLLM's own module paths and names, for handler files written for LiteLLM's proxy.

A hook file imports `litellm.integrations.custom_logger`, `litellm.proxy._types`, `litellm._logging`, ...;
`litellm_shim` makes those imports resolve to the sidecar's API while the file is loaded (and inside its
hook bodies later), so the file runs unchanged without LiteLLM installed. `names` is the table of what
each module path provides; the other modules hold the few names that exist only for LiteLLM's sake.
"""
