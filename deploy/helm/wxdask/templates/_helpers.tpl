{{/* Names, labels and the pieces every pod shares. */}}

{{- define "wxdask.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "wxdask.fullname" -}}
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

{{- define "wxdask.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "wxdask.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wxdask.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "wxdask.labels" -}}
helm.sh/chart: {{ include "wxdask.chart" . }}
{{ include "wxdask.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "wxdask.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "wxdask.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The scheduler Service's name and the address workers and jobs connect to. */}}
{{- define "wxdask.schedulerName" -}}
{{- printf "%s-scheduler" (include "wxdask.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "wxdask.schedulerAddress" -}}
{{- printf "%s://%s:%v" (ternary "tls" "tcp" .Values.tls.enabled) (include "wxdask.schedulerName" .) .Values.scheduler.port }}
{{- end }}

{{/* Labels that select every pod of this release that may talk to the scheduler and the workers. */}}
{{- define "wxdask.ownPods" -}}
matchLabels:
  {{- include "wxdask.selectorLabels" . | nindent 2 }}
matchExpressions:
  - key: app.kubernetes.io/component
    operator: In
    values: [scheduler, worker, job]
{{- end }}

{{/* TLS settings of distributed, from the mounted Secret (tls.enabled). */}}
{{- define "wxdask.tlsEnv" -}}
{{- if .Values.tls.enabled }}
{{- $d := .Values.tls.mountPath }}
- name: DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION
  value: "true"
- name: DASK_DISTRIBUTED__COMM__DEFAULT_SCHEME
  value: tls
- name: DASK_DISTRIBUTED__COMM__TLS__CA_FILE
  value: {{ printf "%s/%s" $d .Values.tls.caKey | quote }}
{{- range $who := list "SCHEDULER" "WORKER" "CLIENT" }}
- name: DASK_DISTRIBUTED__COMM__TLS__{{ $who }}__CERT
  value: {{ printf "%s/%s" $d $.Values.tls.certKey | quote }}
- name: DASK_DISTRIBUTED__COMM__TLS__{{ $who }}__KEY
  value: {{ printf "%s/%s" $d $.Values.tls.keyKey | quote }}
{{- end }}
{{- end }}
{{- end }}

{{- define "wxdask.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{- define "wxdask.gpuImage" -}}
{{- printf "%s:%s" .Values.gpuImage.repository (.Values.gpuImage.tag | default (printf "%s-gpu" .Chart.AppVersion)) }}
{{- end }}

{{/* Environment of every container: writable places under a read-only root, then values.env. */}}
{{- define "wxdask.baseEnv" -}}
- name: HOME
  value: /tmp
- name: DASK_TEMPORARY_DIRECTORY
  value: /scratch
- name: MPLCONFIGDIR
  value: /tmp/matplotlib
{{- include "wxdask.tlsEnv" . }}
{{- range $name, $value := .Values.env }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end }}

{{/* S3 credentials: references to a Secret's keys, never the values themselves. */}}
{{- define "wxdask.s3Env" -}}
{{- with .Values.s3 }}
{{- if .existingSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .secretAccessKeyKey }}
{{- if .sessionTokenKey }}
- name: AWS_SESSION_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .sessionTokenKey }}
{{- end }}
{{- end }}
{{- if .region }}
- name: AWS_DEFAULT_REGION
  value: {{ .region | quote }}
{{- end }}
{{- end }}
{{- end }}

{{- define "wxdask.extraEnv" -}}
{{- range $name, $value := . }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end }}

{{- define "wxdask.metricsAnnotations" -}}
{{- if .root.Values.metrics.enabled }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}

{{/* /tmp and dask's local directory: the only writable places. */}}
{{- define "wxdask.scratchVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 1Gi
- name: scratch
  emptyDir:
    sizeLimit: {{ .Values.workers.scratchSizeLimit }}
{{- if .Values.tls.enabled }}
{{- if not .Values.tls.existingSecret }}
{{- fail "tls.enabled needs tls.existingSecret: a Secret with the CA, certificate and key" }}
{{- end }}
- name: dask-tls
  secret:
    secretName: {{ .Values.tls.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- end }}

{{- define "wxdask.scratchMounts" -}}
- name: tmp
  mountPath: /tmp
- name: scratch
  mountPath: /scratch
{{- if .Values.tls.enabled }}
- name: dask-tls
  mountPath: {{ .Values.tls.mountPath }}
  readOnly: true
{{- end }}
{{- end }}

{{/* The shared volume (workers and the Job), when a claim is named. */}}
{{- define "wxdask.sharedVolume" -}}
{{- with .Values.sharedVolume.existingClaim }}
- name: shared
  persistentVolumeClaim:
    claimName: {{ . }}
{{- end }}
{{- end }}

{{- define "wxdask.sharedMount" -}}
{{- if .Values.sharedVolume.existingClaim }}
- name: shared
  mountPath: {{ .Values.sharedVolume.mountPath }}
{{- end }}
{{- end }}

{{- define "wxdask.podCommon" -}}
serviceAccountName: {{ include "wxdask.serviceAccountName" . }}
automountServiceAccountToken: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end }}
