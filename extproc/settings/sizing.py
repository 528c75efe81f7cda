"""How far Envoy's buffers and the sidecar's gRPC messages reach beyond `extproc.max_request_bytes`.

Both sides size what they accept from the body limit; the margins are set here once so they agree.
"""

from __future__ import annotations

from typing import Final

MIB: Final = 1024 * 1024

# Envoy buffers a little more than the sidecar accepts: the sidecar answers bodies over its limit with its
# own 413, and a hook may grow an accepted body (a system prompt, a rewrite) without Envoy refusing it.
ENVOY_BODY_HEADROOM: Final = 1 * MIB
# A body reaches the sidecar inside an ext_proc message, next to headers, attributes and metadata and in
# protobuf framing: Envoy's connections to the sidecar buffer that much more than a body.
EXT_PROC_MESSAGE_OVERHEAD: Final = 1 * MIB
# The sidecar's gRPC message limit above the body limit: the largest message Envoy sends (the headroom
# and the overhead, 2 MiB), twice over as a margin, since a message over it fails the whole stream with a
# gRPC error where the sidecar would answer its own 413.
SIDECAR_MESSAGE_SLACK: Final = 2 * (ENVOY_BODY_HEADROOM + EXT_PROC_MESSAGE_OVERHEAD)
