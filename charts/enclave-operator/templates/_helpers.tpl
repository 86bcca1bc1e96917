{{- /*
The installation's name, for every object it creates: the release name when it already
says enclave-operator (the usual `helm install enclave-operator`), else
<release>-enclave-operator, so that a second installation (a test, a canary) does not
collide with the first on cluster-scoped objects.
*/ -}}
{{- define "enclave-operator.name" -}}
{{- if contains "enclave-operator" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-enclave-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end }}
{{- define "enclave-operator.labels" -}}
app.kubernetes.io/name: enclave-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}
{{- define "enclave-operator.selector" -}}
app.kubernetes.io/name: enclave-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
