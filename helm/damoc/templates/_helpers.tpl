{{/* Chart name, overridable. */}}
{{- define "damoc.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-scoped name (63-char DNS label limit). */}}
{{- define "damoc.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "damoc.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "damoc.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "damoc.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "damoc.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: damoc
{{- end }}

{{- define "damoc.selectorLabels" -}}
app.kubernetes.io/name: {{ include "damoc.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The account the launcher Role is bound to; must exist when serviceAccount.create is false. */}}
{{- define "damoc.serviceAccountName" -}}
{{- required "serviceAccount.name is required" .Values.serviceAccount.name }}
{{- end }}

{{/* repository:tag[@digest]; call with (list <image values> <root context>). */}}
{{- define "damoc.imageRef" -}}
{{- $img := index . 0 -}}
{{- $root := index . 1 -}}
{{- $ref := printf "%s:%s" $img.repository (default $root.Chart.AppVersion $img.tag) -}}
{{- if $img.digest -}}
{{- if not (hasPrefix "sha256:" $img.digest) -}}
{{- fail (printf "image digest %q must start with sha256:" $img.digest) -}}
{{- end -}}
{{- $ref = printf "%s@%s" $ref $img.digest -}}
{{- end -}}
{{- $ref -}}
{{- end }}

{{- define "damoc.image" -}}
{{- include "damoc.imageRef" (list .Values.image .) }}
{{- end }}

{{/* Object store settings with the per-type defaults filled in. */}}
{{- define "damoc.s3.secretName" -}}
{{- $kfp := eq .Values.objectStore.type "kfp" -}}
{{- default (ternary "mlpipeline-minio-artifact" "s3-credentials" $kfp) .Values.objectStore.secretName -}}
{{- end }}
{{- define "damoc.s3.accessKeyKey" -}}
{{- default (ternary "accesskey" "AWS_ACCESS_KEY_ID" (eq .Values.objectStore.type "kfp")) .Values.objectStore.accessKeyKey -}}
{{- end }}
{{- define "damoc.s3.secretKeyKey" -}}
{{- default (ternary "secretkey" "AWS_SECRET_ACCESS_KEY" (eq .Values.objectStore.type "kfp")) .Values.objectStore.secretKeyKey -}}
{{- end }}
{{- define "damoc.s3.endpoint" -}}
{{- if .Values.objectStore.endpoint -}}
{{- .Values.objectStore.endpoint -}}
{{- else if eq .Values.objectStore.type "kfp" -}}
http://minio-service.kubeflow:9000
{{- end -}}
{{- end }}

{{/* Env vars that give a container the object store (damoc.storage reads these). */}}
{{- define "damoc.s3.env" -}}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ include "damoc.s3.secretName" . }}
      key: {{ include "damoc.s3.accessKeyKey" . }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "damoc.s3.secretName" . }}
      key: {{ include "damoc.s3.secretKeyKey" . }}
{{- with include "damoc.s3.endpoint" . }}
- name: DAMOC_S3_ENDPOINT
  value: {{ . | quote }}
{{- else }}
- name: DAMOC_S3_ENDPOINT
  valueFrom:
    secretKeyRef:
      name: {{ include "damoc.s3.secretName" . }}
      key: DAMOC_S3_ENDPOINT
{{- end }}
{{- with .Values.objectStore.region }}
- name: AWS_REGION
  value: {{ . | quote }}
{{- end }}
{{- end }}

{{/* Version name of the pipeline in KFP: appVersion plus the hash of the compiled file. */}}
{{- define "damoc.pipelineFile" -}}
{{- $f := .Files.Get "files/damoc_pipeline.yaml" -}}
{{- if not $f -}}
{{- fail "files/damoc_pipeline.yaml is missing or empty: it links to pipelines/compiled/damoc_pipeline.yaml (run `damoc compile`)" -}}
{{- end -}}
{{- $f -}}
{{- end }}
{{- define "damoc.pipelineVersion" -}}
{{- /* the images are part of the version: the chart's image values rewrite the package's task images */ -}}
{{- $images := printf "%s\n%s" (include "damoc.image" .) (include "damoc.imageRef" (list .Values.trainImage .)) -}}
{{- printf "%s-%s" .Chart.AppVersion (printf "%s\n%s" (include "damoc.pipelineFile" .) $images | sha256sum | trunc 10) | replace "+" "-" | lower -}}
{{- end }}

{{- define "damoc.registrarName" -}}
{{- printf "%s-registrar" (include "damoc.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end }}

{{/* Whether the registration hook Job is needed at all. */}}
{{- define "damoc.registrationJob" -}}
{{- if or (and .Values.registration.enabled (eq .Values.registration.mode "api")) .Values.schedule.enabled -}}true{{- end -}}
{{- end }}

{{- define "damoc.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end }}
{{- define "damoc.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext }}
{{- end }}
