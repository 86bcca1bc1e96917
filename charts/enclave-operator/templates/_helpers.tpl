{{- define "enclave-operator.name" -}}enclave-operator{{- end }}
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
