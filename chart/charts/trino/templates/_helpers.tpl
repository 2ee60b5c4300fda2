{{/* Names: "<release>-trino", so that the cube subchart of the same release finds it. */}}
{{- define "trino.fullname" -}}
{{- printf "%s-trino" .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "trino.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/name: trino
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gravix
{{- end }}

{{- define "trino.selectorLabels" -}}
app.kubernetes.io/name: trino
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "trino.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* s3://bucket/prefix -> s3://bucket */}}
{{- define "trino.bucket" -}}
{{- regexReplaceAll "^(s3://[^/]+).*$" .Values.store.url "${1}" }}
{{- end }}

{{/* The S3 keys from the gravixd Secret and the catalog's password, read by the catalog as
${ENV:...}. */}}
{{- define "trino.env" -}}
{{- with .Values.icebergCatalog.existingSecret }}
- name: ICEBERG_CATALOG_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.icebergCatalog.passwordKey }}
{{- end }}
{{- with .Values.store.existingSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.store.accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.store.secretAccessKeyKey }}
{{- end }}
{{- end }}

{{/* One node's pod: the coordinator or a worker. */}}
{{- define "trino.pod" -}}
{{- $role := .role }}
{{- $ := .root }}
{{- $node := index $.Values $role }}
metadata:
  labels:
    {{- include "trino.selectorLabels" $ | nindent 4 }}
    app.kubernetes.io/component: {{ $role }}
  annotations:
    checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") $ | sha256sum }}
spec:
  automountServiceAccountToken: false
  {{- with $.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $.Values.podSecurityContext | nindent 4 }}
  containers:
    - name: trino
      image: {{ include "trino.image" $ | quote }}
      imagePullPolicy: {{ $.Values.image.pullPolicy }}
      securityContext:
        {{- toYaml $.Values.securityContext | nindent 8 }}
      env:
        {{- include "trino.env" $ | nindent 8 }}
      ports:
        - name: http
          containerPort: 8080
          protocol: TCP
      startupProbe:
        {{- toYaml $.Values.startupProbe | nindent 8 }}
      livenessProbe:
        {{- toYaml $.Values.livenessProbe | nindent 8 }}
      readinessProbe:
        {{- toYaml $.Values.readinessProbe | nindent 8 }}
      resources:
        {{- toYaml $node.resources | nindent 8 }}
      volumeMounts:
        - name: config
          mountPath: /etc/trino/config.properties
          subPath: {{ $role }}.properties
        - name: config
          mountPath: /etc/trino/jvm.config
          subPath: {{ $role }}-jvm.config
        - name: config
          mountPath: /etc/trino/node.properties
          subPath: node.properties
        - name: config
          mountPath: /etc/trino/log.properties
          subPath: log.properties
        - name: catalog
          mountPath: /etc/trino/catalog
          readOnly: true
        - name: data
          mountPath: /data/trino
        - name: tmp
          mountPath: /tmp
  volumes:
    - name: config
      configMap:
        name: {{ include "trino.fullname" $ }}
    - name: catalog
      configMap:
        name: {{ include "trino.fullname" $ }}-catalog
    - name: data
      emptyDir:
        sizeLimit: 10Gi
    - name: tmp
      emptyDir:
        sizeLimit: 2Gi
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
