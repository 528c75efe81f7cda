"""One message per request where the routes are not ours (Istio): filters that run only on hooked POSTs.

Envoy's per-route config cannot be used in a mesh proxy's route table, so each filter is wrapped in an
`ExtensionWithMatcher` that skips it by the request's method and path, matched with the same regexes
as the generated bootstrap's routes. A POST to a hooked endpoint gets the header copy (which adds
`:path`, from which the sidecar places the request), the one-message ext_proc filter and the buffer
filter that holds the request until the hooks decide; every other request (other methods, other
spellings, other paths) gets the two-message ext_proc filter, which lets the sidecar see its headers
and refuse or pass it as it always did.
"""

from __future__ import annotations

import sys
from typing import Any

import orjson

from extproc.api.endpoints import ENDPOINT_PATHS, path_regex
from extproc.envoy.envoy_config import (
    BUFFER_TYPE,
    HOLDING_FILTER,
    ext_proc_filter,
    header_copy_filter,
)
from extproc.request.pipeline import Pipeline

MATCHER_TYPE = "type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher"
HEADER_INPUT_TYPE = "type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput"
SKIP_TYPE = "type.googleapis.com/envoy.extensions.filters.common.matcher.action.v3.SkipFilter"
# The two-message filter's name, next to the one-message filter (envoy_config.EXT_PROC_FILTER) in one chain.
HEADERS_FIRST_FILTER = "llm_extproc.ext_proc_headers_first"


def _header_is(name: str, string_match: dict[str, Any]) -> dict[str, Any]:
    return {
        "single_predicate": {
            "input": {"name": name, "typed_config": {"@type": HEADER_INPUT_TYPE, "header_name": name}},
            "value_match": string_match,
        }
    }


def hooked_post() -> dict[str, Any]:
    """A POST whose path is a hooked endpoint's (a query string allowed: `:path` carries it)."""
    regexes = (path_regex(suffix)[:-1] + r"(\?.*)?$" for suffix in ENDPOINT_PATHS)
    paths = [_header_is(":path", {"safe_regex": {"google_re2": {}, "regex": regex}}) for regex in regexes]
    return {
        "and_matcher": {
            "predicate": [_header_is(":method", {"exact": "POST"}), {"or_matcher": {"predicate": paths}}]
        }
    }


def skipped_when(filter_: dict[str, Any], predicate: dict[str, Any]) -> dict[str, Any]:
    """`filter_` wrapped so that Envoy skips it for the requests `predicate` matches."""
    skip = {"action": {"name": "skip", "typed_config": {"@type": SKIP_TYPE}}}
    return {
        "name": filter_["name"],
        "typed_config": {
            "@type": MATCHER_TYPE,
            "extension_config": filter_,
            "xds_matcher": {"matcher_list": {"matchers": [{"predicate": predicate, "on_match": skip}]}},
        },
    }


def matched_filters(pipeline: Pipeline, cluster: str, buffer_limit: int) -> list[dict[str, Any]]:
    """The HTTP filters, in order, that give hooked POSTs one ext_proc message and every other request
    the headers message first."""
    hooked = hooked_post()
    not_hooked = {"not_matcher": hooked}
    one = ext_proc_filter(pipeline, cluster=cluster, one_message=True)
    # The body carries the copied headers: it is always sent, whatever the hooks read.
    one["typed_config"]["processing_mode"]["request_body_mode"] = "BUFFERED"
    two = ext_proc_filter(pipeline, cluster=cluster, one_message=False)
    two["name"] = HEADERS_FIRST_FILTER
    buffer = {"@type": BUFFER_TYPE, "max_request_bytes": buffer_limit}
    holding = {"name": HOLDING_FILTER, "typed_config": buffer}
    copying = header_copy_filter(pipeline.config.sidecar.forward_headers, with_path=True)
    return [
        skipped_when(copying, not_hooked),
        skipped_when(one, not_hooked),
        skipped_when(holding, not_hooked),
        skipped_when(two, hooked),
    ]


def istio_filters(pipeline: Pipeline, cluster: str, buffer_limit: int) -> list[dict[str, Any]]:
    """What the Istio EnvoyFilter inserts before the router: `matched_filters`, or the two-message
    ext_proc filter alone when the config asks for two messages (`extproc.messages: two`, routing)."""
    if pipeline.config.sidecar.one_message:
        return matched_filters(pipeline, cluster, buffer_limit)
    return [ext_proc_filter(pipeline, cluster=cluster, one_message=False)]


def chart_file() -> bytes:
    """deploy/helm/llm-extproc/files/one-message.json: what the chart's templates cannot compute (the
    hooked-POST predicate and the header copy's source, all headers copied), generated here."""
    source = header_copy_filter(None, with_path=True)["typed_config"]["default_source_code"]["inline_string"]
    return orjson.dumps({"hooked_post": hooked_post(), "header_copy_lua": source}, option=orjson.OPT_INDENT_2)


if __name__ == "__main__":
    sys.stdout.buffer.write(chart_file() + b"\n")
