{{/* Names and labels, as `helm create` lays them out. */}}
{{- define "gravixd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "gravixd.fullname" -}}
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

{{- define "gravixd.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "gravixd.labels" -}}
helm.sh/chart: {{ include "gravixd.chart" . }}
{{ include "gravixd.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "gravixd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gravixd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "gravixd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gravixd.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "gravixd.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* The port of a "host:port" listen address; "" when the listener is disabled. */}}
{{- define "gravixd.port" -}}
{{- if . }}{{ regexReplaceAll "^.*:" . "" }}{{ end }}
{{- end }}

{{/* The [[tcp_listeners]] other pods can reach, one "name port" a line (name: tcp-<stream>-<i>,
     at most 15 characters as Kubernetes wants): each becomes a containerPort and a Service
     port. A loopback listener is not reachable through a Service, so it gets neither. */}}
{{- define "gravixd.tcpListenerPorts" -}}
{{- range $i, $listener := .Values.config.tcp_listeners | default list }}
{{- $port := include "gravixd.port" $listener.listen }}
{{- if and $port (not (regexMatch "^(127\\.[0-9.]+|\\[::1\\]|localhost):" $listener.listen)) }}
{{ printf "tcp-%s-%d" $listener.stream $i }} {{ $port }}
{{- end }}
{{- end }}
{{- end }}

{{/* The Secret with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or "" for the SDK's chain. */}}
{{- define "gravixd.s3SecretName" -}}
{{- if .Values.s3.existingSecret }}
{{- .Values.s3.existingSecret }}
{{- else if .Values.s3.create }}
{{- printf "%s-s3" (include "gravixd.fullname" .) }}
{{- end }}
{{- end }}

{{/* Grace period: above the drain deadline, or Kubernetes kills the drain mid-upload. */}}
{{- define "gravixd.terminationGracePeriodSeconds" -}}
{{- $drain := .Values.config.drain_timeout_seconds | default 20 | float64 }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add (ceil $drain | int) 15 }}
{{- else if le (float64 .Values.terminationGracePeriodSeconds) $drain }}
{{- fail (printf "terminationGracePeriodSeconds: expected more than config.drain_timeout_seconds (%v), got %v" $drain .Values.terminationGracePeriodSeconds) }}
{{- else }}
{{- .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/* Raw TCP has no authentication, so gravixd refuses to start with bearer tokens and a TCP
     listener other hosts can reach (unless tcp_allow_unauthenticated): say so at render
     time, not as a crash-looping pod. Loopback as gravixd sees it: 127.x, [::1], localhost. */}}
{{- define "gravixd.checkTcpAuth" -}}
{{- if and .Values.auth.existingSecret (not .Values.config.tcp_allow_unauthenticated) }}
{{- $listens := list (list "config.tcp_listen" (.Values.config.tcp_listen | default "")) }}
{{- range $i, $listener := .Values.config.tcp_listeners | default list }}
{{- $listens = append $listens (list (printf "config.tcp_listeners[%d].listen" $i) $listener.listen) }}
{{- end }}
{{- range $listens }}
{{- $key := index . 0 }}{{- $addr := index . 1 }}
{{- if and $addr (not (regexMatch "^(127\\.[0-9.]+|\\[::1\\]|localhost):[0-9]+$" $addr)) }}
{{- fail (printf "%s = %q is reachable from other pods, but raw TCP has no authentication and auth.existingSecret configures bearer tokens (gravixd would refuse to start): expected %s to be \"\" (no raw TCP) or a loopback address, or config.tcp_allow_unauthenticated: true if every client that can reach the port may write" $key $addr $key) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* Env and volumes shared by the daemon and the rollup CronJob. */}}
{{- define "gravixd.env" -}}
- name: GRAVIXD_CONFIG
  value: /etc/gravixd/gravixd.toml
{{- with (include "gravixd.s3SecretName" .) }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.s3.accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.s3.secretAccessKeyKey }}
{{- end }}
{{- if .Values.iceberg.existingSecret }}
- name: GRAVIXD_ICEBERG_CATALOG_URI_FILE
  value: /etc/gravixd-iceberg/{{ .Values.iceberg.uriKey }}
{{- end }}
{{- if .Values.auth.existingSecret }}
- name: GRAVIXD_AUTH_TOKENS_FILE
  value: /etc/gravixd-auth/{{ .Values.auth.key }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "gravixd.configVolumes" -}}
- name: config
  configMap:
    name: {{ include "gravixd.fullname" . }}
- name: tmp
  emptyDir:
    sizeLimit: 256Mi
{{- if .Values.auth.existingSecret }}
- name: auth
  secret:
    secretName: {{ .Values.auth.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- if .Values.iceberg.existingSecret }}
- name: iceberg
  secret:
    secretName: {{ .Values.iceberg.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- end }}

{{- define "gravixd.configMounts" -}}
- name: config
  mountPath: /etc/gravixd
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- if .Values.auth.existingSecret }}
- name: auth
  mountPath: /etc/gravixd-auth
  readOnly: true
{{- end }}
{{- if .Values.iceberg.existingSecret }}
- name: iceberg
  mountPath: /etc/gravixd-iceberg
  readOnly: true
{{- end }}
{{- end }}

{{/* One TOML value. Helm reads every YAML number as a float64, and toToml would write
     `upload_concurrency = 4.0`, which gravixd rightly rejects for an integer key: whole
     numbers are written as integers (a float key accepts an integer). */}}
{{- define "gravixd.tomlValue" -}}
{{- if kindIs "float64" . }}
{{- if eq (floor .) . }}{{ printf "%d" (int64 .) }}{{ else }}{{ printf "%v" . }}{{ end }}
{{- else if or (kindIs "int" .) (kindIs "int64" .) (kindIs "bool" .) }}
{{- printf "%v" . }}
{{- else if kindIs "slice" . }}
{{- $items := list }}
{{- range . }}{{ $items = append $items (include "gravixd.tomlValue" .) }}{{ end }}
{{- printf "[%s]" (join ", " $items) }}
{{- else }}
{{- toString . | toJson }}
{{- end }}
{{- end }}

{{/* values.config as gravixd.toml: scalar keys first, then [[tcp_listeners]] tables. */}}
{{- define "gravixd.toml" -}}
{{- range $key := keys .Values.config | sortAlpha }}
{{- $value := get $.Values.config $key }}
{{- if ne $key "tcp_listeners" }}
{{ $key }} = {{ include "gravixd.tomlValue" $value }}
{{- end }}
{{- end }}
{{- range .Values.config.tcp_listeners }}

[[tcp_listeners]]
{{- $listener := . }}
{{- range $key := keys $listener | sortAlpha }}
{{ $key }} = {{ include "gravixd.tomlValue" (get $listener $key) }}
{{- end }}
{{- end }}
{{- end }}
