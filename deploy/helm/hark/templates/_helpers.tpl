{{/* Labels shared by every object of the release. */}}
{{- define "hark.labels" -}}
app.kubernetes.io/name: hark
app.kubernetes.io/instance: {{ .Release.Name }}
{{ include "hark.metaLabels" . }}
{{- end -}}

{{/* The labels beside the selector ones: version, chart, prefix. */}}
{{- define "hark.metaLabels" -}}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.namePrefix }}
hark.dev/prefix: {{ trimSuffix "-" . | quote }}
{{- end }}
{{- end -}}

{{/* Object name: <namePrefix>hark-<suffix>. Blue-green: v2 (namePrefix "v2-") never collides with v1. */}}
{{- define "hark.name" -}}
{{- printf "%shark-%s" .root.Values.namePrefix .suffix | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* HARK_DEPLOYMENT of a pack: <namePrefix><pack>, so a blue-green copy has its own queues and registry. */}}
{{- define "hark.deployment" -}}
{{- $name := printf "%s%s" .root.Values.namePrefix .pack.name -}}
{{- if not (regexMatch "^[a-z0-9][a-z0-9-]{0,39}$" $name) -}}
{{- fail (printf "pack %q: HARK_DEPLOYMENT %q must be lowercase letters, digits and '-', at most 40 characters (namePrefix + pack name)" .pack.name $name) -}}
{{- end -}}
{{- $name -}}
{{- end -}}

{{/* Selector labels of one component of one pack: (dict "root" $ "pack" $pack "component" "api"|"worker"). */}}
{{- define "hark.selector" -}}
app.kubernetes.io/name: hark
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
hark.dev/deployment: {{ include "hark.deployment" . }}
{{- end -}}

{{/* image reference: (dict "root" $ "image" .Values.images.x). An empty tag means the chart's appVersion. */}}
{{- define "hark.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{/* REDIS_URL: the chart's Redis, or redis.url. */}}
{{- define "hark.redisUrl" -}}
{{- if .Values.redis.enabled -}}
{{- printf "redis://%s:6379/0" (include "hark.name" (dict "root" . "suffix" "redis")) -}}
{{- else -}}
{{- required "redis.url is required when redis.enabled is false" .Values.redis.url -}}
{{- end -}}
{{- end -}}

{{/* host:port of Redis for the KEDA redis scaler. */}}
{{- define "hark.redisAddress" -}}
{{- if .Values.redis.enabled -}}
{{- printf "%s.%s.svc:6379" (include "hark.name" (dict "root" . "suffix" "redis")) .Release.Namespace -}}
{{- else -}}
{{- required "redis.address (host:port) is required for KEDA when redis.enabled is false" .Values.redis.address -}}
{{- end -}}
{{- end -}}

{{/* API_BASE_URL of the APIs: the chart's license proxy, licenseProxy.url, or nothing (licensing off). */}}
{{- define "hark.licenseUrl" -}}
{{- if .Values.licenseProxy.enabled -}}
{{- printf "http://%s:6699" (include "hark.name" (dict "root" . "suffix" "license-proxy")) -}}
{{- else -}}
{{- .Values.licenseProxy.url -}}
{{- end -}}
{{- end -}}

{{/* The worker's termination grace: HARK_SHUTDOWN_GRACE_SECONDS + the supervisor's 15 s kill margin + 15 s. */}}
{{- define "hark.workerTerminationGrace" -}}
{{- add (int .Values.shutdownGraceSeconds) 30 -}}
{{- end -}}

{{/* Every checkpoint URL the packs of this release name (for the pre-warming jobs). */}}
{{- define "hark.allModelUrls" -}}
{{- $urls := list -}}
{{- range .Values.packs }}{{- range .modelUrls }}{{- $urls = append $urls . -}}{{- end }}{{- end -}}
{{- toJson (uniq $urls) -}}
{{- end -}}

{{/* `hark checkpoints pull` with the configured URLs, checksums and versions. */}}
{{- define "hark.pullArgs" -}}
- checkpoints
- pull
{{- range (.Values.checkpoints.urls | default (include "hark.allModelUrls" . | fromJsonArray)) }}
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
    image: {{ include "hark.image" (dict "root" $root "image" $root.Values.images.worker) | quote }}
    imagePullPolicy: {{ $root.Values.imagePullPolicy }}
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
    persistentVolumeClaim: { claimName: {{ include "hark.modelCacheClaim" $root }} }
{{- end -}}

{{/* The shared cache's claim: modelCache.claimName, or the one the chart creates. */}}
{{- define "hark.modelCacheClaim" -}}
{{- if .Values.modelCache.create -}}
{{- include "hark.name" (dict "root" . "suffix" "model-cache") -}}
{{- else -}}
{{- required "modelCache.claimName is required for storage.strategy sharedVolume" .Values.modelCache.claimName -}}
{{- end -}}
{{- end -}}

{{/* Checkpoint download and S3 settings (workers, init containers). */}}
{{- define "hark.storageEnv" -}}
- { name: MODEL_CACHE_DIR, value: {{ .Values.modelCache.mountPath | quote }} }
- { name: MODEL_CACHE_MAX_SIZE, value: {{ .Values.modelCache.maxSize | quote }} }
- { name: MODEL_CACHE_EVICTION, value: {{ .Values.modelCache.eviction | quote }} }
- { name: MODEL_DOWNLOAD_WORKERS, value: {{ .Values.download.workers | quote }} }
- { name: MODEL_DOWNLOAD_RESUME, value: {{ .Values.download.resume | quote }} }
- { name: MODEL_DOWNLOAD_RETRIES, value: {{ .Values.download.retries | quote }} }
- { name: MODEL_DOWNLOAD_TIMEOUT, value: {{ .Values.download.timeout | quote }} }
- { name: HF_HUB_OFFLINE, value: "1" }
{{- with .Values.aws.region }}
- { name: AWS_REGION, value: {{ . | quote }} }
{{- end }}
{{- with .Values.aws.endpointUrl }}
- { name: AWS_ENDPOINT_URL, value: {{ . | quote }} }
{{- end }}
{{- end -}}

{{/* Name of a pack's API Service (and Deployment): (dict "root" $ "pack" $pack). */}}
{{- define "hark.apiName" -}}
{{- include "hark.name" (dict "root" .root "suffix" (printf "%s-api" .pack.name)) -}}
{{- end -}}

{{/* The dispatcher's route map (HARK_ROUTES), as YAML: every language of every pack -> that pack's API
     Service; dispatcher.fallbackPack's API -> "*"; then dispatcher.extraRoutes. A language claimed twice
     fails the render (the loader would refuse it at start anyway). */}}
{{- define "hark.dispatcherRoutes" -}}
{{- $routes := dict -}}
{{- $packApis := dict -}}
{{- range $pack := .Values.packs -}}
{{- $url := printf "http://%s:7100" (include "hark.apiName" (dict "root" $ "pack" $pack)) -}}
{{- $_ := set $packApis $pack.name $url -}}
{{- range $language := $pack.languages -}}
{{- if hasKey $routes $language -}}
{{- fail (printf "dispatcher: language %q is in two packs (%s and %s); a language routes to one pack" $language (get $routes $language) $url) -}}
{{- end -}}
{{- $_ := set $routes $language $url -}}
{{- end -}}
{{- end -}}
{{- with .Values.dispatcher.fallbackPack -}}
{{- if not (hasKey $packApis .) -}}
{{- fail (printf "dispatcher.fallbackPack %q is not a pack name (packs: %s)" . (keys $packApis | sortAlpha | join ", ")) -}}
{{- end -}}
{{- $_ := set $routes "*" (get $packApis .) -}}
{{- end -}}
{{- range $language, $target := .Values.dispatcher.extraRoutes -}}
{{- if hasKey $routes $language -}}
{{- fail (printf "dispatcher.extraRoutes: %q is already routed to %v (by a pack or fallbackPack)" $language (get $routes $language)) -}}
{{- end -}}
{{- $_ := set $routes $language $target -}}
{{- end -}}
{{- toYaml $routes -}}
{{- end -}}

{{/* Prometheus scrape annotations of a pod template: (dict "root" $ "port" N). */}}
{{- define "hark.scrapeAnnotations" -}}
{{- if .root.Values.metrics.podAnnotations -}}
annotations:
  prometheus.io/scrape: "true"
  prometheus.io/port: {{ .port | quote }}
  prometheus.io/path: /metrics
{{- end -}}
{{- end -}}
