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
{{- printf "%s://%s.%s.svc:%d" (ternary "https" "http" $root.Values.api.tls.enabled) (include "bpfleet.componentName" (list $root "api")) $root.Release.Namespace (int $root.Values.api.port) -}}
{{- else -}}
{{- fail "api.enabled is false: set agent.apiUrl and operator.apiUrl to the fleet API's URL" -}}
{{- end -}}
{{- end -}}

{{/* Each token in a Secret of its own: agents reference the bootstrap token's only. */}}
{{- define "bpfleet.adminTokenSecret" -}}
{{- default (include "bpfleet.componentName" (list . "admin-token")) .Values.tokens.admin.existingSecret -}}
{{- end -}}

{{- define "bpfleet.bootstrapTokenSecret" -}}
{{- default (include "bpfleet.componentName" (list . "bootstrap-token")) .Values.tokens.bootstrap.existingSecret -}}
{{- end -}}

{{/* A token kept across upgrades: from its own Secret, else from the Secret that
held both tokens before they were split, else new. Call with (list $ "admin-token"). */}}
{{- define "bpfleet.keptToken" -}}
{{- $root := index . 0 -}}
{{- $key := index . 1 -}}
{{- $own := (lookup "v1" "Secret" $root.Release.Namespace (include "bpfleet.componentName" (list $root $key))).data | default dict -}}
{{- $both := (lookup "v1" "Secret" $root.Release.Namespace (include "bpfleet.componentName" (list $root "tokens"))).data | default dict -}}
{{- index $own $key | default (index $both $key) | default (randAlphaNum 48 | b64enc) -}}
{{- end -}}

{{/* TLS of the API: "existing" (a Secret), "certManager", "generated", or "" (off). */}}
{{- define "bpfleet.tlsMode" -}}
{{- $tls := .Values.api.tls -}}
{{- if $tls.enabled -}}
{{- if $tls.existingSecret -}}existing
{{- else if $tls.certManager.enabled -}}certManager
{{- else -}}generated
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "bpfleet.tlsSecret" -}}
{{- default (include "bpfleet.componentName" (list . "api-tls")) .Values.api.tls.existingSecret -}}
{{- end -}}

{{/* The ConfigMap with the API's CA (ca.crt) that agents and the operator mount, or
"" when they have none to mount. A certificate the chart did not make needs its CA. */}}
{{- define "bpfleet.apiCaConfigMap" -}}
{{- $tls := .Values.api.tls -}}
{{- $mode := include "bpfleet.tlsMode" . -}}
{{- if $mode -}}
{{- if $tls.existingCaConfigMap -}}
{{- $tls.existingCaConfigMap -}}
{{- else if or $tls.ca (and (eq $mode "generated") .Values.api.enabled) -}}
{{- include "bpfleet.componentName" (list . "api-ca") -}}
{{- else if .Values.api.enabled -}}
{{- fail "api.tls: agents and the operator must verify the API's certificate: set api.tls.ca (PEM) or api.tls.existingCaConfigMap" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "bpfleet.apiCaPath" -}}/etc/bpfleet/api-ca/ca.crt{{- end -}}

{{/* The chart's own CA and certificate for the API ({"crt", "key", "ca"}, base64):
kept from the cluster's Secret when it has one, else made once per render and
remembered, so every template that asks gets the same ones. */}}
{{- define "bpfleet.generatedTls" -}}
{{- $memo := .Values.api.tls.generated -}}
{{- if not (hasKey $memo "_made") -}}
{{- $service := include "bpfleet.componentName" (list . "api") -}}
{{- $names := list $service (printf "%s.%s" $service .Release.Namespace) (printf "%s.%s.svc" $service .Release.Namespace) (printf "%s.%s.svc.cluster.local" $service .Release.Namespace) -}}
{{- $kept := (lookup "v1" "Secret" .Release.Namespace (include "bpfleet.tlsSecret" .)).data | default dict -}}
{{- $made := dict "crt" (index $kept "tls.crt") "key" (index $kept "tls.key") "ca" (index $kept "ca.crt") -}}
{{- if not (and $made.crt $made.key $made.ca) -}}
{{- $days := int $memo.validityDays -}}
{{- $authority := genCA (printf "%s API CA" (include "bpfleet.fullname" .)) $days -}}
{{- $certificate := genSignedCert $service nil $names $days $authority -}}
{{- $made = dict "crt" ($certificate.Cert | b64enc) "key" ($certificate.Key | b64enc) "ca" ($authority.Cert | b64enc) -}}
{{- end -}}
{{- $_ := set $memo "_made" $made -}}
{{- end -}}
{{- toJson $memo._made -}}
{{- end -}}

{{/* The DNS names the API's certificate must carry: its Service's. */}}
{{- define "bpfleet.apiDnsNames" -}}
{{- $service := include "bpfleet.componentName" (list . "api") -}}
{{- toJson (list $service (printf "%s.%s" $service .Release.Namespace) (printf "%s.%s.svc" $service .Release.Namespace) (printf "%s.%s.svc.cluster.local" $service .Release.Namespace)) -}}
{{- end -}}

{{/* The API's CA as agents get it (PEM), for their checksum annotation. */}}
{{- define "bpfleet.apiCa" -}}
{{- $tls := .Values.api.tls -}}
{{- if $tls.existingCaConfigMap -}}
{{- (lookup "v1" "ConfigMap" .Release.Namespace $tls.existingCaConfigMap).data | default dict | toJson -}}
{{- else if $tls.ca -}}
{{- $tls.ca -}}
{{- else if eq (include "bpfleet.tlsMode" .) "generated" -}}
{{- (include "bpfleet.generatedTls" . | fromJson).ca | b64dec -}}
{{- end -}}
{{- end -}}

{{/* The trust keys the chart renders (trust.keys), as the ConfigMap's data. */}}
{{- define "bpfleet.trustData" -}}
{{- $data := dict -}}
{{- range $file, $pem := .Values.trust.keys -}}
{{- if not (hasSuffix ".pub" $file) -}}
{{- fail (printf "trust.keys: %q must end in .pub (the trust store reads only *.pub files)" $file) -}}
{{- end -}}
{{- $_ := set $data $file $pem -}}
{{- end -}}
{{- toJson $data -}}
{{- end -}}

{{/* A hash of the trust keys' content: pods that read them at start restart when it
changes. An existing ConfigMap is read from the cluster when there is one to ask. */}}
{{- define "bpfleet.trustChecksum" -}}
{{- if .Values.trust.existingConfigMap -}}
{{- (lookup "v1" "ConfigMap" .Release.Namespace .Values.trust.existingConfigMap).data | default dict | toJson | sha256sum | trunc 16 -}}
{{- else -}}
{{- include "bpfleet.trustData" . | sha256sum | trunc 16 -}}
{{- end -}}
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
      name: {{ include "bpfleet.adminTokenSecret" . }}
      key: admin-token
- name: BPFLEET_API_BOOTSTRAP_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "bpfleet.bootstrapTokenSecret" . }}
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
