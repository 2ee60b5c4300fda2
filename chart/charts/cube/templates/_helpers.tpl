{{- define "cube.fullname" -}}
{{- printf "%s-cube" .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "cube.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/name: cube
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gravix
{{- end }}

{{- define "cube.selectorLabels" -}}
app.kubernetes.io/name: cube
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "cube.apiSecretName" -}}
{{- if .Values.apiSecret.existingSecret }}
{{- .Values.apiSecret.existingSecret }}
{{- else if .Values.apiSecret.create }}
{{- printf "%s-api" (include "cube.fullname" .) }}
{{- else }}
{{- fail "cube.apiSecret: expected existingSecret (a Secret with CUBEJS_API_SECRET) or create: true with a value" }}
{{- end }}
{{- end }}

{{/* Env shared by the API and the refresh worker: Trino, Cube Store, the API secret. */}}
{{- define "cube.env" -}}
- name: CUBEJS_DB_TYPE
  value: trino
- name: CUBEJS_DB_HOST
  value: {{ .Values.trino.host | default (printf "%s-trino" .Release.Name) | quote }}
- name: CUBEJS_DB_PORT
  value: {{ .Values.trino.port | quote }}
- name: CUBEJS_DB_USER
  value: {{ .Values.trino.user | quote }}
- name: CUBEJS_DB_PRESTO_CATALOG
  value: {{ .Values.trino.catalog | quote }}
- name: CUBEJS_DB_SCHEMA
  value: {{ .Values.trino.schema | quote }}
- name: CUBEJS_DEV_MODE
  value: "false"
- name: CUBEJS_TELEMETRY
  value: "false"
{{- if .Values.cubestore.enabled }}
- name: CUBEJS_CUBESTORE_HOST
  value: {{ include "cube.fullname" . }}-store
{{- else }}
- name: CUBEJS_CACHE_AND_QUEUE_DRIVER
  value: memory
{{- end }}
- name: CUBEJS_API_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "cube.apiSecretName" . }}
      key: {{ .Values.apiSecret.key }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* A Cube pod: the API or the refresh worker (the same image and model). */}}
{{- define "cube.pod" -}}
{{- $ := .root }}
metadata:
  labels:
    {{- include "cube.selectorLabels" $ | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
  annotations:
    checksum/model: {{ include (print $.Template.BasePath "/configmap-model.yaml") $ | sha256sum }}
spec:
  automountServiceAccountToken: false
  {{- with $.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $.Values.podSecurityContext | nindent 4 }}
  containers:
    - name: cube
      image: {{ printf "%s:%s" $.Values.image.repository ($.Values.image.tag | default $.Chart.AppVersion) | quote }}
      imagePullPolicy: {{ $.Values.image.pullPolicy }}
      securityContext:
        {{- toYaml $.Values.securityContext | nindent 8 }}
      env:
        {{- include "cube.env" $ | nindent 8 }}
        {{- if eq .component "refresh-worker" }}
        - name: CUBEJS_REFRESH_WORKER
          value: "true"
        {{- end }}
      ports:
        - name: http
          containerPort: 4000
          protocol: TCP
      livenessProbe:
        {{- toYaml $.Values.livenessProbe | nindent 8 }}
      readinessProbe:
        {{- toYaml $.Values.readinessProbe | nindent 8 }}
      resources:
        {{- toYaml .resources | nindent 8 }}
      volumeMounts:
        - name: model
          mountPath: /cube/conf/model
          readOnly: true
        - name: tmp
          mountPath: /tmp
  volumes:
    - name: model
      configMap:
        name: {{ include "cube.fullname" $ }}-model
    - name: tmp
      emptyDir:
        sizeLimit: 1Gi
  {{- with $.Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $.Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $.Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
