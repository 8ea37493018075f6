{{/* Labels shared by the checkpoint jobs. */}}
{{- define "hark.labels" -}}
app.kubernetes.io/name: hark
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* `hark checkpoints pull` with the configured URLs, checksums and versions. */}}
{{- define "hark.pullArgs" -}}
- checkpoints
- pull
{{- range .Values.checkpoints.urls }}
- {{ . | quote }}
{{- end }}
{{- with .Values.checkpoints.checksums }}
- --checksum
- {{ join "," . | quote }}
{{- end }}
{{- with .Values.checkpoints.versions }}
- --expect-version
- {{ join "," . | quote }}
{{- end }}
{{- end -}}

{{/* The pod spec both jobs share; pass (dict "root" $ "full" bool). */}}
{{- define "hark.pullPod" -}}
{{- $root := .root -}}
restartPolicy: OnFailure
{{- with $root.Values.serviceAccountName }}
serviceAccountName: {{ . }}
{{- end }}
securityContext:
  {{- toYaml $root.Values.securityContext | nindent 2 }}
containers:
  - name: checkpoint-pull
    image: "{{ $root.Values.image.repository }}:{{ $root.Values.image.tag }}"
    imagePullPolicy: {{ $root.Values.image.pullPolicy }}
    command: ["hark"]
    args:
      {{- include "hark.pullArgs" $root | nindent 6 }}
      {{- if .full }}
      - --full
      {{- end }}
    env:
      - { name: MODEL_CACHE_DIR, value: {{ $root.Values.modelCache.mountPath | quote }} }
      - { name: MODEL_CACHE_MAX_SIZE, value: {{ $root.Values.modelCache.maxSize | quote }} }
      - { name: MODEL_CACHE_EVICTION, value: {{ $root.Values.modelCache.eviction | quote }} }
      - { name: MODEL_DOWNLOAD_WORKERS, value: {{ $root.Values.download.workers | quote }} }
      - { name: MODEL_DOWNLOAD_RESUME, value: {{ $root.Values.download.resume | quote }} }
      - { name: MODEL_DOWNLOAD_RETRIES, value: {{ $root.Values.download.retries | quote }} }
      - { name: MODEL_DOWNLOAD_TIMEOUT, value: {{ $root.Values.download.timeout | quote }} }
      - { name: HARK_LOG_FORMAT, value: {{ $root.Values.logFormat | quote }} }
      - { name: HF_HUB_OFFLINE, value: "1" }
      {{- with $root.Values.aws.region }}
      - { name: AWS_REGION, value: {{ . | quote }} }
      {{- end }}
      {{- with $root.Values.aws.endpointUrl }}
      - { name: AWS_ENDPOINT_URL, value: {{ . | quote }} }
      {{- end }}
    {{- with $root.Values.aws.credentialsSecret }}
    envFrom:
      - secretRef: { name: {{ . }} }
    {{- end }}
    resources:
      {{- toYaml $root.Values.resources | nindent 6 }}
    volumeMounts:
      - { name: model-cache, mountPath: {{ $root.Values.modelCache.mountPath | quote }} }
volumes:
  - name: model-cache
    persistentVolumeClaim: { claimName: {{ $root.Values.modelCache.claimName }} }
{{- end -}}
