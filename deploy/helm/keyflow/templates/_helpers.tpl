{{/* keyflow.fullname: the release's prefix of every object. */}}
{{- define "keyflow.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* keyflow.labels: the common labels. */}}
{{- define "keyflow.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* keyflow.selector: the labels that select every keyflow pod of the release. */}}
{{- define "keyflow.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
keyflow.needs: what a role group's roles need, as YAML (read it with
fromYaml): the NATS identity file (crypto, admin), Temporal (admin,
lifecycle, remediation), the HSM (every role but remediation), the XKS
files (gateway) and the cursor key (admin).
*/}}
{{- define "keyflow.needs" -}}
{{- $r := . -}}
identity: {{ or (has "crypto" $r) (has "admin" $r) }}
temporal: {{ or (has "admin" $r) (has "lifecycle" $r) (has "remediation" $r) }}
hsm: {{ gt (len (without $r "remediation")) 0 }}
xks: {{ has "gateway" $r }}
cursor: {{ has "admin" $r }}
{{- end -}}
