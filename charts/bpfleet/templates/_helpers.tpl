{{/* Names, labels and the pieces several components share. */}}

{{- define "bpfleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* release-chart, unless the release name already contains the chart name. */}}
{{- define "bpfleet.fullname" -}}
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

{{/* <fullname>-<component>, for component resources. Call with (list $ "api"). */}}
{{- define "bpfleet.componentName" -}}
{{- $root := index . 0 -}}
{{- printf "%s-%s" (include "bpfleet.fullname" $root | trunc 50 | trimSuffix "-") (index . 1) -}}
{{- end -}}

{{- define "bpfleet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every resource. Call with (list $ "api"); the component may be "". */}}
{{- define "bpfleet.labels" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
helm.sh/chart: {{ include "bpfleet.chart" $root }}
{{ include "bpfleet.selectorLabels" (list $root $component) }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
app.kubernetes.io/part-of: bpfleet
{{- with $root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The labels a component's selector matches; they never change after install. */}}
{{- define "bpfleet.selectorLabels" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
app.kubernetes.io/name: {{ include "bpfleet.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
{{- if $component }}
app.kubernetes.io/component: {{ $component }}
{{- end }}
{{- end -}}

{{/* registry/repository:tag or @digest. Call with (list $ .Values.api.image). */}}
{{- define "bpfleet.image" -}}
{{- $root := index . 0 -}}
{{- $image := index . 1 -}}
{{- $repository := $image.repository -}}
{{- with $root.Values.image.registry -}}
{{- $repository = printf "%s/%s" (trimSuffix "/" .) $repository -}}
{{- end -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repository (default (default $root.Chart.AppVersion $root.Values.image.tag) $image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "bpfleet.imagePullSecrets" -}}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The API's in-cluster URL, unless a component names another. Call with (list $ url). */}}
{{- define "bpfleet.apiUrl" -}}
{{- $root := index . 0 -}}
{{- $override := index . 1 -}}
{{- if $override -}}
{{- $override -}}
{{- else if $root.Values.api.enabled -}}
{{- printf "http://%s.%s.svc:%d" (include "bpfleet.componentName" (list $root "api")) $root.Release.Namespace (int $root.Values.api.port) -}}
{{- else -}}
{{- fail "api.enabled is false: set agent.apiUrl and operator.apiUrl to the fleet API's URL" -}}
{{- end -}}
{{- end -}}

{{- define "bpfleet.tokensSecret" -}}
{{- default (include "bpfleet.componentName" (list . "tokens")) .Values.tokens.existingSecret -}}
{{- end -}}

{{- define "bpfleet.trustConfigMap" -}}
{{- default (include "bpfleet.componentName" (list . "trust")) .Values.trust.existingConfigMap -}}
{{- end -}}

{{- define "bpfleet.hasTrust" -}}
{{- if or .Values.trust.keys .Values.trust.existingConfigMap -}}true{{- end -}}
{{- end -}}

{{/* A settings map ({nodeReadySeconds: 30}) as PREFIX_NODE_READY_SECONDS variables.
Call with (list "BPFLEET_API_" .Values.api.settings). */}}
{{- define "bpfleet.settingsEnv" -}}
{{- $prefix := index . 0 -}}
{{- range $name, $value := index . 1 }}
- name: {{ printf "%s%s" $prefix (snakecase $name | upper) }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{/* What the API and the worker share: the same BPFLEET_API_* settings. */}}
{{- define "bpfleet.apiEnv" -}}
- name: BPFLEET_API_ENVIRONMENT
  value: {{ .Values.api.environment | quote }}
- name: BPFLEET_API_DATABASE_URL
  valueFrom:
    secretKeyRef:
      {{- if .Values.database.url }}
      name: {{ include "bpfleet.componentName" (list . "database") }}
      key: url
      {{- else }}
      name: {{ .Values.database.existingSecret }}
      key: {{ .Values.database.secretKey }}
      {{- end }}
- name: BPFLEET_API_REDIS_URL
  {{- if .Values.redis.existingSecret }}
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.existingSecret }}
      key: {{ .Values.redis.secretKey }}
  {{- else }}
  value: {{ .Values.redis.url | quote }}
  {{- end }}
- name: BPFLEET_API_ADMIN_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "bpfleet.tokensSecret" . }}
      key: admin-token
- name: BPFLEET_API_BOOTSTRAP_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "bpfleet.tokensSecret" . }}
      key: bootstrap-token
{{- if include "bpfleet.hasTrust" . }}
- name: BPFLEET_API_TRUST
  value: /etc/bpfleet/trust
{{- end }}
{{- include "bpfleet.settingsEnv" (list "BPFLEET_API_" .Values.api.settings) }}
{{- end -}}

{{/* Pod placement and metadata every component takes from its values. */}}
{{- define "bpfleet.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end -}}

{{/* Non-root, read-only, no capabilities: for every component but the agent. */}}
{{- define "bpfleet.restrictedSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* {tier: edge, zone: a} as "tier=edge,zone=a", the agent's BPFLEET_AGENT_LABELS. */}}
{{- define "bpfleet.labelList" -}}
{{- $pairs := list -}}
{{- range $key, $value := . -}}
{{- $pairs = append $pairs (printf "%s=%s" $key $value) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}
