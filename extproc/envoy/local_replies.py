"""What Envoy answers and writes on its own: its local replies in the OpenAI error envelope, and its
access log (used by extproc/envoy/envoy_config.py)."""

from __future__ import annotations

from typing import Any

import orjson

from extproc.api import anthropic
from extproc.api.endpoints import BODYLESS_METHODS, LLM_PATH_PREFIXES, UNHOOKED_MESSAGE
from extproc.api.openai import envelope
from extproc.decisions import METADATA_NAMESPACE, VERDICT
from extproc.request.pipeline import Pipeline
from extproc.types import FORWARDED_HEADERS_NAMESPACE

# What Envoy answers when it cannot reach the sidecar or the sidecar fails (ext_proc status_on_error).
SIDECAR_ERROR_STATUS = 503
# Envoy response flags of its own upstream failures (connect, no host, overflow, retries, timeout).
UPSTREAM_FAILURE_FLAGS = ("UF", "UH", "UO", "URX", "UT")
FILE_LOG_TYPE = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
REQ_WITHOUT_QUERY_TYPE = "type.googleapis.com/envoy.extensions.formatter.req_without_query.v3.ReqWithoutQuery"


def _status_is(status: int, runtime_key: str) -> dict[str, Any]:
    value = {"default_value": status, "runtime_key": runtime_key}
    return {"status_code_filter": {"comparison": {"op": "EQ", "value": value}}}


def _envelope(status: int, message: str, kind: str, param: str | None) -> dict[str, Any]:
    """The OpenAI error envelope as Envoy's local reply body; `code` written as a string on purpose
    (Envoy would type a lone %RESPONSE_CODE% as a number)."""
    error = {"message": message, "type": kind, "param": param, "code": str(status)}
    return {"content_type": "application/json", "json_format": {"error": error}}


def _anthropic_body(status: int, message: str) -> dict[str, Any]:
    """Anthropic's error body as Envoy's local reply body."""
    error = {"type": anthropic.error_type(status), "message": message}
    return {"content_type": "application/json", "json_format": {"type": "error", "error": error}}


# One-message mode: Envoy's header-copy filter refuses a request without a body, marking it with this key
# in the forwarded headers' namespace (see envoy_config.header_copy_filter).
NO_BODY_KEY = "no_body"
NO_BODY_MESSAGE = "Invalid request: the request body is empty"


def no_body_answers() -> tuple[str, str]:
    """The refusal of a request without a body as JSON text, in the OpenAI and the Anthropic shape (for
    the header-copy filter to answer itself where no local reply mapper of ours runs: Istio)."""
    openai = _envelope(400, NO_BODY_MESSAGE, "invalid_request_error", "request_body")["json_format"]
    anthropic_body = _anthropic_body(400, NO_BODY_MESSAGE)["json_format"]
    return orjson.dumps(openai).decode(), orjson.dumps(anthropic_body).decode()


# Requests on Anthropic's routes get Envoy's replies in Anthropic's shape.
ANTHROPIC_PATHS = r"^(/anthropic)?(/v1)?/messages/?(\?.*)?$"
_ON_ANTHROPIC_ROUTE = {
    "header_filter": {"header": {"name": ":path", "string_match": {"safe_regex": {"regex": ANTHROPIC_PATHS}}}}
}


def _for_anthropic(mapper: dict[str, Any]) -> dict[str, Any]:
    """The same mapper for Anthropic's routes, answering in Anthropic's error shape."""
    error = mapper["body_format_override"]["json_format"]["error"]
    status = int(error["code"])
    filters = [*mapper["filter"]["and_filter"]["filters"], _ON_ANTHROPIC_ROUTE]
    return {
        "filter": {"and_filter": {"filters": filters}},
        "body_format_override": _anthropic_body(status, error["message"]),
    }


def local_replies(pipeline: Pipeline) -> dict[str, Any]:
    """Envoy's own error replies in the family's shape (Anthropic's on its routes, else the OpenAI
    envelope): a body too large, the upstream or the sidecar unreachable. The sidecar's own answers always
    carry its metadata, so a reply without it is Envoy's."""
    limit = pipeline.config.sidecar.max_request_bytes
    without_sidecar_metadata = {
        "metadata_filter": {
            "match_if_key_not_found": True,
            "matcher": {
                "filter": METADATA_NAMESPACE,
                "path": [{"key": VERDICT}],
                "value": {"string_match": {"safe_regex": {"regex": "^$"}}},
            },
        }
    }
    # Envoy's own 413 only: a hook's 413 keeps its message (the sidecar's answers carry the verdict).
    too_large = {
        "filter": {
            "and_filter": {
                "filters": [_status_is(413, "llm_extproc.local_reply.413"), without_sidecar_metadata]
            }
        },
        "body_format_override": _envelope(
            413,
            f"Request body too large: the limit is {limit} bytes",
            "invalid_request_error",
            "request_body",
        ),
    }
    upstream_failed = [
        {
            "filter": {
                "and_filter": {
                    "filters": [
                        _status_is(status, f"llm_extproc.local_reply.{status}"),
                        {"response_flag_filter": {"flags": list(UPSTREAM_FAILURE_FLAGS)}},
                    ]
                }
            },
            "body_format_override": _envelope(status, "%LOCAL_REPLY_BODY%", "internal_server_error", None),
        }
        for status in (502, 503, 504)
    ]
    sidecar_failed = [
        {
            "filter": {
                "and_filter": {
                    "filters": [
                        _status_is(status, f"llm_extproc.local_reply.sidecar.{status}"),
                        without_sidecar_metadata,
                    ]
                }
            },
            "body_format_override": _envelope(status, message, "internal_server_error", None),
        }
        for status, message in (
            (SIDECAR_ERROR_STATUS, "llm-extproc is unavailable: the request was not processed"),
            (504, "llm-extproc did not answer in time: the request was not processed"),
        )
    ]
    # Envoy's own 400 (a request it cannot parse or route, e.g. a path with %00).
    bad_request = {
        "filter": {"and_filter": {"filters": [_status_is(400, "llm_extproc.local_reply.400"),
                                              without_sidecar_metadata]}},
        "body_format_override": _envelope(400, "%LOCAL_REPLY_BODY%", "invalid_request_error", None),
    }  # fmt: skip
    # A request without a body, refused by the header-copy filter: as the sidecar refuses an empty body.
    no_body = {
        "filter": {
            "and_filter": {
                "filters": [
                    _status_is(400, "llm_extproc.local_reply.no_body"),
                    {
                        "metadata_filter": {
                            "match_if_key_not_found": False,
                            "matcher": {
                                "filter": FORWARDED_HEADERS_NAMESPACE,
                                "path": [{"key": NO_BODY_KEY}],
                                "value": {"bool_match": True},
                            },
                        }
                    },
                ]
            }
        },
        "body_format_override": _envelope(400, NO_BODY_MESSAGE, "invalid_request_error", "request_body"),
    }
    openai_mappers = [too_large, *upstream_failed, *sidecar_failed, no_body, bad_request]
    return {"mappers": [*(_for_anthropic(m) for m in openai_mappers), *openai_mappers]}


_BODYLESS_METHODS = "^({})$".format("|".join(BODYLESS_METHODS))


def unhooked_llm_routes(except_post: bool) -> list[dict[str, Any]]:
    """Refuse, in Envoy, what would reach an LLM upstream around the hooks: a path that starts like an LLM
    endpoint (any case) that no hooked route took, or (`except_post`) such a path with a method the
    hooks never see."""
    methods = "^(POST|GET|HEAD|DELETE|OPTIONS)$" if except_post else _BODYLESS_METHODS
    body = envelope(404, UNHOOKED_MESSAGE).decode()
    method = {"name": ":method", "string_match": {"safe_regex": {"regex": methods}}, "invert_match": True}
    content_type = {
        "header": {"key": "content-type", "value": "application/json"},
        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
    }
    return [
        {
            "name": f"unhooked_{'method' if except_post else 'llm'}_{index}",
            "match": {
                "prefix": prefix,
                "case_sensitive": False,
                "headers": [method],
            },
            "direct_response": {"status": 404, "body": {"inline_string": body}},
            "response_headers_to_add": [content_type],
        }
        for index, prefix in enumerate(LLM_PATH_PREFIXES)
    ]


def access_log(path: str, ext_proc_filter: str, client_request_id_header: str) -> list[dict[str, Any]]:
    """One JSON line per request at `path`, with the sidecar's metadata and the timing that the ext_proc
    filter named `ext_proc_filter` keeps in its filter state."""
    fields = {
        "time": "%START_TIME%",
        "request_id": "%REQ(X-REQUEST-ID)%",
        # What the client sent as x-request-id (Envoy makes its own): to find a client's request.
        "client_request_id": f"%REQ({client_request_id_header})%",
        "method": "%REQ(:METHOD)%",
        # Without the query: a client may put a key there (`?key=...`), and the log must not keep it.
        "path": "%REQ_WITHOUT_QUERY(:PATH)%",
        "status": "%RESPONSE_CODE%",
        "details": "%RESPONSE_CODE_DETAILS%",
        "flags": "%RESPONSE_FLAGS%",
        "duration_ms": "%DURATION%",
        "upstream": "%UPSTREAM_HOST%",
        "llm_extproc": f"%DYNAMIC_METADATA({METADATA_NAMESPACE})%",
        "ext_proc_timing": f"%FILTER_STATE({ext_proc_filter}:PLAIN)%",
    }
    return [
        {
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": FILE_LOG_TYPE,
                "path": path,
                "log_format": {
                    "json_format": fields,
                    "formatters": [
                        {
                            "name": "envoy.formatter.req_without_query",
                            "typed_config": {"@type": REQ_WITHOUT_QUERY_TYPE},
                        }
                    ],
                },
            },
        }
    ]
