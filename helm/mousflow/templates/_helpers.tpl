{{/* Names, labels and the derived settings every template shares. */}}

{{- define "mousflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mousflow.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "mousflow.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "mousflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* selectorLabels: call with (dict "ctx" $ "component" "operator") */}}
{{- define "mousflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mousflow.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "mousflow.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The chart's MinIO runs unless an external S3 credentials Secret is given. */}}
{{- define "mousflow.minio.enabled" -}}
{{- if and .Values.minio.enabled (not .Values.s3.existingSecret) -}}true{{- end -}}
{{- end -}}

{{- define "mousflow.s3.secret" -}}
{{- default (printf "%s-s3" (include "mousflow.fullname" .)) .Values.s3.existingSecret -}}
{{- end -}}

{{- define "mousflow.s3.endpoint" -}}
{{- if include "mousflow.minio.enabled" . -}}
{{- printf "http://%s-minio.%s.svc:9000" (include "mousflow.fullname" .) .Release.Namespace -}}
{{- else -}}
{{- .Values.s3.endpoint -}}
{{- end -}}
{{- end -}}

{{- define "mousflow.prefect.url" -}}
{{- printf "http://%s-prefect.%s.svc:4200/api" (include "mousflow.fullname" .) .Release.Namespace -}}
{{- end -}}

{{/* The namespaces the operator watches (a list): none when it watches all. */}}
{{- define "mousflow.watchNamespaces" -}}
{{- if .Values.operator.watchAllNamespaces -}}
[]
{{- else if .Values.operator.watchNamespaces -}}
{{- toJson (uniq .Values.operator.watchNamespaces) -}}
{{- else -}}
{{- toJson (list .Release.Namespace) -}}
{{- end -}}
{{- end -}}

{{/* Extra settings of stage pods and the chart's own Dask controller: the controller's name, and the kopf
arguments that point a controller at the watched namespaces (a Role in each) or at all of them. */}}
{{- define "mousflow.dask.controller" -}}
{{- printf "%s-dask-controller" (include "mousflow.fullname" .) -}}
{{- end -}}

{{- define "mousflow.kopfNamespaceArgs" -}}
{{- $args := list "--all-namespaces" -}}
{{- if not .Values.operator.watchAllNamespaces -}}
{{- $args = list -}}
{{- range include "mousflow.watchNamespaces" . | fromJsonArray -}}
{{- $args = append $args (printf "--namespace=%s" .) -}}
{{- end -}}
{{- end -}}
{{- toYaml $args -}}
{{- end -}}

{{/* The restricted Pod Security profile, for every pod of the chart. */}}
{{- define "mousflow.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "mousflow.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/* Rules the schema cannot say clearly (Go's regexp has no lookahead; cross-field rules). */}}
{{- define "mousflow.validate" -}}
{{- if or (eq .Values.image.tag "latest") (eq .Values.minio.image.tag "latest") -}}
{{- fail "image.tag and minio.image.tag must name a version, not latest (pods would run whatever latest was when their node pulled it)" -}}
{{- end -}}
{{- if and (not .Values.minio.enabled) (not .Values.s3.existingSecret) -}}
{{- fail "minio.enabled=false needs an external S3: set s3.existingSecret (a Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) and, unless it is AWS S3, s3.endpoint" -}}
{{- end -}}
{{- if and .Values.s3.endpoint (not .Values.s3.existingSecret) -}}
{{- fail "s3.endpoint is set but s3.existingSecret is not: give the Secret with that S3's AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" -}}
{{- end -}}
{{- if and (eq .Values.prefect.database.type "postgresql") (not .Values.prefect.database.postgresql.existingSecret) -}}
{{- fail "prefect.database.type=postgresql needs prefect.database.postgresql.existingSecret (a Secret with the postgresql+asyncpg:// URL)" -}}
{{- end -}}
{{- if and .Values.operator.watchAllNamespaces .Values.operator.watchNamespaces -}}
{{- fail "operator.watchAllNamespaces=true and operator.watchNamespaces are exclusive: choose one" -}}
{{- end -}}
{{- if and .Values.dask.workerPods (gt (int .Values.dask.minWorkers) (int .Values.dask.maxWorkers)) -}}
{{- fail (printf "dask.minWorkers=%v is above dask.maxWorkers=%v: an imaging stage could never start its workers" .Values.dask.minWorkers .Values.dask.maxWorkers) -}}
{{- end -}}
{{- if and .Values.dask.workerPods (eq .Values.dask.imagingServiceAccount (printf "%s-operator" (include "mousflow.fullname" .))) -}}
{{- fail "dask.imagingServiceAccount must not be the operator's service account: imaging pods get only what a Dask client needs" -}}
{{- end -}}
{{- with .Values.history.uri -}}
{{- $bucket := index (splitList "/" (trimPrefix "s3://" .)) 0 -}}
{{- if and (include "mousflow.minio.enabled" $) (not (has $bucket $.Values.minio.buckets)) -}}
{{- fail (printf "history.uri is in bucket %s, which the chart's MinIO does not make (minio.buckets: %s): add it there or set history.uri in one of them" $bucket (join ", " $.Values.minio.buckets)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
