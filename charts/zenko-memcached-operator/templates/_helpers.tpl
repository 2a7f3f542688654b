{{/* Chart name, overridable. */}}
{{- define "zmm-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the objects: the release name, followed by the chart name unless it already contains it. */}}
{{- define "zmm-operator.fullname" -}}
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

{{- define "zmm-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the operator pods; never change them (a Deployment selector is immutable). */}}
{{- define "zmm-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "zmm-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Labels of every object of the chart. */}}
{{- define "zmm-operator.labels" -}}
helm.sh/chart: {{ include "zmm-operator.chart" . }}
{{ include "zmm-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: zenko
{{- end }}

{{- define "zmm-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "zmm-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "zmm-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* "true" when leader election is on: forced by leaderElection.enabled, or auto with more than one replica. */}}
{{- define "zmm-operator.leaderElection" -}}
{{- $le := .Values.leaderElection.enabled }}
{{- if eq (toString $le) "auto" }}
{{- if gt (int .Values.replicaCount) 1 }}true{{ else }}false{{ end }}
{{- else if $le }}true{{ else }}false{{ end }}
{{- end }}

{{/* Namespace of the module from values. */}}
{{- define "zmm-operator.moduleNamespace" -}}
{{- default .Release.Namespace .Values.module.namespace }}
{{- end }}

{{/* Namespace of the module pods the NetworkPolicy protects. */}}
{{- define "zmm-operator.modulesNamespace" -}}
{{- if .Values.networkPolicy.modulesNamespace }}
{{- .Values.networkPolicy.modulesNamespace }}
{{- else if .Values.module.enabled }}
{{- include "zmm-operator.moduleNamespace" . }}
{{- else }}
{{- .Release.Namespace }}
{{- end }}
{{- end }}

{{/* A NetworkPolicy peer from {podSelector, namespaceSelector}; an empty namespaceSelector is left out (same namespace only). */}}
{{- define "zmm-operator.peer" -}}
- podSelector:
    {{- toYaml (default (dict) .podSelector) | nindent 4 }}
  {{- if .namespaceSelector }}
  namespaceSelector:
    {{- toYaml .namespaceSelector | nindent 4 }}
  {{- end }}
{{- end }}

{{/* The modules from values, as a JSON list of {name, role, spec}: one combined module, or the
Data and Metadata modules of the pair, whose specs get their role from the chart. */}}
{{- define "zmm-operator.modules" -}}
{{- $m := .Values.module }}
{{- if eq $m.layout "pair" }}
{{- $data := merge (dict "role" "Data") (deepCopy (default (dict) $m.data.spec)) }}
{{- $metadata := merge (dict "role" "Metadata") (deepCopy (default (dict) $m.metadata.spec)) }}
{{- list (dict "name" $m.data.name "role" "Data" "spec" $data) (dict "name" $m.metadata.name "role" "Metadata" "spec" $metadata) | toJson }}
{{- else }}
{{- list (dict "name" $m.name "role" "Combined" "spec" (default (dict) $m.spec)) | toJson }}
{{- end }}
{{- end }}

{{/* Where CloudServer finds the modules from values, as JSON {"data": {host, port}, "metadata":
{host, port}}: the data Service of the module serving data, the metadata Service of the one
serving metadata. */}}
{{- define "zmm-operator.moduleEndpoints" -}}
{{- $ns := include "zmm-operator.moduleNamespace" . }}
{{- $out := dict }}
{{- range include "zmm-operator.modules" . | fromJsonArray }}
{{- if ne .role "Metadata" }}
{{- $_ := set $out "data" (dict "host" (printf "%s-data.%s.svc" .name $ns) "port" (dig "services" "dataPort" 9991 .spec)) }}
{{- end }}
{{- if ne .role "Data" }}
{{- $_ := set $out "metadata" (dict "host" (printf "%s-metadata.%s.svc" .name $ns) "port" (dig "services" "metadataPort" 9990 .spec)) }}
{{- end }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/* Labels selecting the CloudServer pods. */}}
{{- define "zmm-operator.cloudserverSelector" -}}
app.kubernetes.io/name: cloudserver
app.kubernetes.io/instance: {{ .Values.cloudserver.name }}
app.kubernetes.io/component: s3
{{- end }}

{{/* Name of the Secret holding CloudServer's keys. */}}
{{- define "zmm-operator.cloudserverSecret" -}}
{{- default (printf "%s-credentials" .Values.cloudserver.name) .Values.cloudserver.credentials.existingSecret }}
{{- end }}

{{/* The host name CloudServer serves path-style requests for. */}}
{{- define "zmm-operator.cloudserverEndpoint" -}}
{{- default (printf "%s.%s.svc" .Values.cloudserver.name (include "zmm-operator.moduleNamespace" .)) .Values.cloudserver.endpoint }}
{{- end }}
