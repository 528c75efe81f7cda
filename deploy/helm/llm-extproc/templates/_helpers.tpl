{{/* Names and labels. */}}
{{- define "llm-extproc.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "llm-extproc.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "llm-extproc.selectorLabels" -}}
app.kubernetes.io/name: {{ include "llm-extproc.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "llm-extproc.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "llm-extproc.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: {{ .Values.mode }}
{{- end }}

{{- define "llm-extproc.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "llm-extproc.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "llm-extproc.configMapName" -}}
{{- default (include "llm-extproc.fullname" .) .Values.existingConfigMap }}
{{- end }}

{{- define "llm-extproc.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Fixed paths inside the pod. */}}
{{- define "llm-extproc.configFile" -}}/etc/llm-extproc/config.yaml{{- end }}
{{- define "llm-extproc.socket" -}}unix:/run/llm-extproc/extproc.sock{{- end }}
{{- define "llm-extproc.bootstrapFile" -}}/etc/envoy/envoy.yaml{{- end }}

{{/* The llm-extproc Service's host name, and Istio's name for its outbound cluster. */}}
{{- define "llm-extproc.serviceHost" -}}
{{- printf "%s.%s.svc.%s" (include "llm-extproc.fullname" .) .Release.Namespace .Values.istio.clusterDomain }}
{{- end }}

{{- define "llm-extproc.istioCluster" -}}
{{- printf "outbound|%d||%s" (int .Values.server.grpcPort) (include "llm-extproc.serviceHost" .) }}
{{- end }}

{{/* config.extproc.max_request_bytes, or the sidecar's default (32 MiB). */}}
{{- define "llm-extproc.maxRequestBytes" -}}
{{- int (dig "extproc" "max_request_bytes" 33554432 (.Values.config | default dict)) }}
{{- end }}

{{/*
The ext_proc HTTP filter, as extproc.envoy.envoy_config.ext_proc_filter() builds it from the same config
(tests/deploy checks they are equal): message_timeout = hook_timeout_ms + 500 ms, max_message_timeout
= max(60 s, message_timeout + 1 s), status_on_error 503, the request body BUFFERED when a callback or enforce_user_param
needs it, and the metadata namespaces of extproc.auth.metadata forwarded.
*/}}
{{- define "llm-extproc.extProcFilter" -}}
{{- $config := .Values.config | default dict }}
{{- $messageMs := add (int (dig "extproc" "hook_timeout_ms" 5000 $config)) 500 }}
{{- $callbacks := dig "litellm_settings" "callbacks" list $config }}
{{- $enforceUser := dig "general_settings" "enforce_user_param" false $config }}
{{- $forwarding := list }}
{{- range $field, $spec := dig "extproc" "auth" "metadata" dict $config }}
{{- $forwarding = append $forwarding (regexReplaceAll ":[^:]*$" $spec "") }}
{{- end }}
{{- $metadata := dict "receiving_namespaces" (dict "untyped" (list "llm_extproc")) }}
{{- if $forwarding }}
{{- $_ := set $metadata "forwarding_namespaces" (dict "untyped" (uniq $forwarding)) }}
{{- end }}
{{- $mode := dict
  "request_header_mode" "SEND"
  "request_body_mode" (ternary "BUFFERED" "NONE" (or $enforceUser (not (empty $callbacks))))
  "response_header_mode" (ternary "SEND" "SKIP" .Values.istio.responseHeaders)
  "response_body_mode" "NONE"
  "request_trailer_mode" "SKIP"
  "response_trailer_mode" "SKIP" }}
{{- $typed := dict
  "@type" "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor"
  "grpc_service" (dict "envoy_grpc" (dict "cluster_name" (include "llm-extproc.istioCluster" .)))
  "failure_mode_allow" (dig "extproc" "failure_mode_allow" false $config)
  "processing_mode" $mode
  "allow_mode_override" true
  "status_on_error" (dict "code" 503)
  "message_timeout" (printf "%.3fs" (divf $messageMs 1000))
  "max_message_timeout" (printf "%ds" (max 60 (add (div $messageMs 1000) 1)))
  "metadata_options" $metadata }}
{{- toYaml (dict "name" "envoy.filters.http.ext_proc" "typed_config" $typed) }}
{{- end }}

{{/*
The HTTP filters the Istio EnvoyFilter inserts before the router, as
extproc.envoy.endpoint_match.istio_filters() builds them (tests/deploy checks they are equal). One message
per request unless the config asks for two (extproc.messages: two, or extproc.routing): a POST to a hooked
endpoint (the predicate of files/one-message.json, generated) gets the header copy (with :path), the
ext_proc filter without the headers message and the buffer filter that holds it until the hooks decide;
any other request gets the two-message ext_proc filter. Each is skipped by an ExtensionWithMatcher.
*/}}
{{- define "llm-extproc.istioHttpFilters" -}}
{{- $config := .Values.config | default dict }}
{{- $two := include "llm-extproc.extProcFilter" . | fromYaml }}
{{- if or (eq (dig "extproc" "messages" "" $config) "two") (dig "extproc" "routing" false $config) }}
{{- toJson (list $two) }}
{{- else }}
{{- $generated := .Files.Get "files/one-message.json" | fromJson }}
{{- $hooked := $generated.hooked_post }}
{{- $notHooked := dict "not_matcher" $hooked }}
{{- $one := deepCopy $two }}
{{- $_ := set $one.typed_config.processing_mode "request_header_mode" "SKIP" }}
{{- $_ = set $one.typed_config.processing_mode "request_body_mode" "BUFFERED" }}
{{- $metadata := $one.typed_config.metadata_options }}
{{- $_ = set $metadata.receiving_namespaces "untyped" (append $metadata.receiving_namespaces.untyped "llm_extproc.request") }}
{{- $forwarded := dig "forwarding_namespaces" "untyped" list $metadata }}
{{- $_ = set $metadata "forwarding_namespaces" (dict "untyped" (append $forwarded "llm_extproc.request")) }}
{{- $_ = set $two "name" "llm_extproc.ext_proc_headers_first" }}
{{- $lua := $generated.header_copy_lua }}
{{- with dig "extproc" "forward_headers" list $config }}
{{- $only := list }}
{{- range concat (list "content-type" "content-encoding" "x-request-id") . | uniq }}
{{- $only = append $only (printf "[%q] = true" (lower .)) | uniq }}
{{- end }}
{{- $lua = replace "local ONLY = nil" (printf "local ONLY = {%s}" (join ", " $only)) $lua }}
{{- end }}
{{- $copying := dict "name" "envoy.filters.http.lua" "typed_config" (dict "@type" "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua" "default_source_code" (dict "inline_string" $lua)) }}
{{- $limit := add (include "llm-extproc.maxRequestBytes" . | int) 1048576 }}
{{- $holding := dict "name" "envoy.filters.http.buffer" "typed_config" (dict "@type" "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer" "max_request_bytes" $limit) }}
{{- $filters := list }}
{{- range $filter := list $copying $one $holding }}
{{- $filters = append $filters (include "llm-extproc.skippedWhen" (list $filter $notHooked) | fromJson) }}
{{- end }}
{{- toJson (append $filters (include "llm-extproc.skippedWhen" (list $two $hooked) | fromJson)) }}
{{- end }}
{{- end }}

{{/* A filter wrapped so that Envoy skips it for the requests a predicate matches: (list filter predicate). */}}
{{- define "llm-extproc.skippedWhen" -}}
{{- $filter := index . 0 }}
{{- $skip := dict "action" (dict "name" "skip" "typed_config" (dict "@type" "type.googleapis.com/envoy.extensions.filters.common.matcher.action.v3.SkipFilter")) }}
{{- $matcher := dict "matcher_list" (dict "matchers" (list (dict "predicate" (index . 1) "on_match" $skip))) }}
{{- toJson (dict "name" $filter.name "typed_config" (dict "@type" "type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher" "extension_config" $filter "xds_matcher" $matcher)) }}
{{- end }}

{{/*
Merged into the generated bootstrap with Envoy's --config-yaml: a listener on 0.0.0.0 that exposes
only the admin interface's /ready (the admin itself stays on 127.0.0.1), for the kubelet's probes.
*/}}
{{- define "llm-extproc.envoyReadiness" -}}
static_resources:
  listeners:
    - name: readiness
      address:
        socket_address: {address: 0.0.0.0, port_value: {{ int .Values.envoy.readinessPort }}}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: readiness
                route_config:
                  virtual_hosts:
                    - name: readiness
                      domains: ["*"]
                      routes:
                        - match: {path: /ready}
                          route: {cluster: envoy_admin}
                        - match: {prefix: /}
                          direct_response: {status: 404}
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
    - name: envoy_admin
      type: STATIC
      connect_timeout: 1s
      load_assignment:
        cluster_name: envoy_admin
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: {address: 127.0.0.1, port_value: {{ int .Values.envoy.adminPort }}}
{{- end }}

{{/* The securityContext of every container: non-root, read-only root, no privileges. */}}
{{- define "llm-extproc.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* env and envFrom of the llm-extproc image (the init container loads the config too). */}}
{{- define "llm-extproc.env" -}}
env:
  - name: PYTHONDONTWRITEBYTECODE
    value: "1"
  - name: HOME
    value: /tmp
  {{- with .Values.server.env }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with .Values.server.envFrom }}
envFrom:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Checks the schema cannot express. */}}
{{- define "llm-extproc.checks" -}}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (not (dig "requests" "cpu" "" .Values.server.resources)) }}
{{- fail "autoscaling.enabled needs server.resources.requests.cpu (the HPA targets its utilization)" }}
{{- end }}
{{- if and (eq .Values.mode "istio") (gt (int (dig "extproc" "workers" 1 (.Values.config | default dict))) 1) }}
{{- fail "config.extproc.workers > 1 needs mode sidecar (the generated Envoy config balances across workers); in istio mode scale with replicas" }}
{{- end }}
{{- if not .Values.existingConfigMap }}
{{- $grace := dig "extproc" "grace_seconds" 10 (.Values.config | default dict) }}
{{- if gt (add (int .Values.shutdownDelaySeconds) 1 (ceil $grace | int)) (int .Values.terminationGracePeriodSeconds) }}
{{- fail "terminationGracePeriodSeconds must cover shutdownDelaySeconds + 1 + config.extproc.grace_seconds" }}
{{- end }}
{{- end }}
{{- if and .Values.metrics.enabled (not .Values.existingConfigMap) }}
{{- $listen := dig "extproc" "metrics_listen" "" (.Values.config | default dict) }}
{{- if and $listen (not (hasSuffix (printf ":%d" (int .Values.metrics.port)) $listen)) }}
{{- fail (printf "config.extproc.metrics_listen %s is not on metrics.port %d: leave it unset (the chart sets it) or make them agree" $listen (int .Values.metrics.port)) }}
{{- end }}
{{- end }}
{{- if and .Values.networkPolicy.enabled (eq .Values.mode "sidecar") (not .Values.networkPolicy.http) }}
{{- fail "networkPolicy.enabled in sidecar mode needs networkPolicy.http: who may send LLM requests to Envoy (e.g. [{namespaceSelector: {}}] for every pod in the cluster, an ipBlock for a load balancer)" }}
{{- end }}
{{- if and .Values.istio.authorizationPolicy.enabled (not (or .Values.istio.authorizationPolicy.principals .Values.istio.authorizationPolicy.namespaces)) }}
{{- fail "istio.authorizationPolicy.enabled needs principals or namespaces (an empty allow list would refuse every caller)" }}
{{- end }}
{{- if eq .Values.mode "istio" }}
{{- $labels := .Values.istio.workloadSelector.labels }}
{{- if and $labels .Values.istio.targetRefs }}
{{- fail "istio: set exactly one of workloadSelector.labels and targetRefs (Istio refuses an EnvoyFilter with both)" }}
{{- end }}
{{- if not (or $labels .Values.istio.targetRefs) }}
{{- fail "istio: set workloadSelector.labels (sidecars, gateway pods) or targetRefs (Gateway API gateways, waypoints)" }}
{{- end }}
{{- if and .Values.istio.targetRefs (eq .Values.istio.context "SIDECAR_INBOUND") (int .Values.istio.portNumber) }}
{{- fail "istio.portNumber with targetRefs in SIDECAR_INBOUND (a waypoint): the waypoint's HTTP listener is internal and has no port; leave portNumber 0" }}
{{- end }}
{{- $podLabels := merge (dict) (include "llm-extproc.selectorLabels" . | fromYaml) .Values.podLabels }}
{{- $selects := true }}
{{- range $key, $value := .Values.istio.workloadSelector.labels }}
{{- if ne (toString (get $podLabels $key)) (toString $value) }}
{{- $selects = false }}
{{- end }}
{{- end }}
{{- if and $labels $selects (eq (default $.Release.Namespace .Values.istio.namespace) .Release.Namespace) }}
{{- fail "istio.workloadSelector.labels select llm-extproc's own pods: ext_proc would call itself" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The identity headers of extproc.auth.headers a client could send itself (a JSON list): every one,
less those extproc.auth.trusted_headers declares set by an earlier filter (`true`: all of them).
Mirrors AuthSources.untrusted_headers.
*/}}
{{- define "llm-extproc.untrustedHeaders" -}}
{{- $config := .Values.config | default dict }}
{{- $trusted := dig "extproc" "auth" "trusted_headers" false $config }}
{{- $out := list }}
{{- if not (eq (toString $trusted) "true") }}
{{- $trustedList := list }}
{{- if kindIs "slice" $trusted }}{{- range $trusted }}{{- $trustedList = append $trustedList (lower .) }}{{- end }}{{- end }}
{{- range $field, $header := dig "extproc" "auth" "headers" dict $config }}
{{- if not (has (lower $header) $trustedList) }}
{{- $out = append $out (lower $header) }}
{{- end }}
{{- end }}
{{- end }}
{{- $out | uniq | sortAlpha | toJson }}
{{- end }}

{{/*
The config.yaml the ConfigMap holds: `config`, with extproc.metrics_listen set to 0.0.0.0:metrics.port
when metrics.enabled and the config does not set it (a YAML mapping).
*/}}
{{- define "llm-extproc.config" -}}
{{- $config := deepCopy (.Values.config | default dict) }}
{{- if and .Values.metrics.enabled (not (dig "extproc" "metrics_listen" "" $config)) }}
{{- $extproc := get $config "extproc" | default dict }}
{{- $_ := set $extproc "metrics_listen" (printf "0.0.0.0:%d" (int .Values.metrics.port)) }}
{{- $_ := set $config "extproc" $extproc }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/*
The `listener` match of the EnvoyFilter's patches. HTTP and network filter patches: portNumber when set
(on a sidecar's virtualInbound listener Istio matches it against the filter chain's destination port);
with targetRefs in SIDECAR_INBOUND (an ambient waypoint) the waypoint's HTTP listener, main_internal.
The LISTENER patch (`listener` argument true) is scoped the same way, except that a sidecar's inbound
ports share one listener, virtualInbound, which Istio matches by name (not by the application's port).
*/}}
{{- define "llm-extproc.listenerMatch" -}}
{{- $values := index . 0 }}
{{- $forListener := index . 1 }}
{{- $port := int $values.istio.portNumber }}
{{- $match := dict }}
{{- if eq $values.istio.context "GATEWAY" }}
{{- if $port }}{{- $_ := set $match "portNumber" $port }}{{- end }}
{{- else if $values.istio.targetRefs }}
{{- $_ := set $match "name" "main_internal" }}
{{- else if $forListener }}
{{- $_ := set $match "name" "virtualInbound" }}
{{- else if $port }}
{{- $_ := set $match "portNumber" $port }}
{{- end }}
{{- if $match }}{{- toYaml $match }}{{- end }}
{{- end }}

{{/* The metrics port's number. */}}
{{- define "llm-extproc.metricsPort" -}}
{{- int .Values.metrics.port }}
{{- end }}
