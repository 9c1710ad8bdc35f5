{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "kgpu.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Base name of every object: the release name, with the chart name when the release is not called that. */}}
{{- define "kgpu.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kgpu.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "kgpu.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kgpu
{{- end -}}

{{/* Selector labels of one component; call with (dict "root" $ "component" "device-plugin"). */}}
{{- define "kgpu.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kgpu.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "kgpu.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Restarts the node components when the config file changes. */}}
{{- define "kgpu.configChecksum" -}}
checksum/config: {{ toYaml .Values.config | sha256sum }}
{{- end -}}

{{/* Environment every kgpu container shares: its node, log level, driver root, and the NVIDIA runtime's
     device injection (all GPUs, without requesting one, as NVIDIA's own node components do). */}}
{{- define "kgpu.env" -}}
- name: NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
- name: KGPU_LOG_LEVEL
  value: {{ .root.Values.logLevel | quote }}
- name: NVIDIA_VISIBLE_DEVICES
  value: all
- name: NVIDIA_DRIVER_CAPABILITIES
  value: {{ .capabilities | default "utility" | quote }}
{{- if .root.Values.driverRoot }}
- name: NVIDIA_DRIVER_ROOT
  value: {{ .root.Values.driverRoot | quote }}
- name: CONTAINER_DRIVER_ROOT
  value: /driver-root
{{- end }}
{{- with .env }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* "true" when the nodes run GPU containers without the NVIDIA container toolkit: the device plugin's
     deviceListStrategy is (or lists) driver-mounts. Nothing then injects the driver or the GPUs' device nodes
     into kgpu's own containers, so they mount driverRoot themselves and run privileged (README "Without the
     NVIDIA container toolkit" says why). */}}
{{- define "kgpu.toolkitFree" -}}
{{- if contains "driver-mounts" (toString (dig "flags" "plugin" "deviceListStrategy" "" (.Values.config | default dict))) -}}
{{- if not .Values.driverRoot -}}
{{- fail "config.flags.plugin.deviceListStrategy driver-mounts needs driverRoot: the NVIDIA driver's directory on the nodes (e.g. /usr/local/nvidia, /home/kubernetes/bin/nvidia, or / for a driver installed on the host)" -}}
{{- end -}}
true
{{- end -}}
{{- end -}}

{{- define "kgpu.rootSecurityContext" -}}
runAsUser: 0
runAsNonRoot: false
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "kgpu.nonRootSecurityContext" -}}
runAsUser: {{ .Values.nonRootUser }}
runAsGroup: {{ .Values.nonRootUser }}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Pod-level settings every node component shares; call with (dict "root" $ "component" $c).
     A component's own nodeSelector / affinity (the labeler has both) replace the global ones. */}}
{{- define "kgpu.nodePodSpec" -}}
{{- $v := .root.Values -}}
{{- $nodeSelector := ternary (get .component "nodeSelector") $v.nodeSelector (hasKey .component "nodeSelector") -}}
{{- $affinity := ternary (get .component "affinity") $v.affinity (hasKey .component "affinity") -}}
priorityClassName: {{ $v.priorityClassName }}
{{- with $v.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.runtimeClassName }}
runtimeClassName: {{ . }}
{{- end }}
{{- with $nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Volumes and mounts for the config file, /tmp and the optional driver root. */}}
{{- define "kgpu.commonVolumes" -}}
- name: config
  configMap:
    name: {{ include "kgpu.fullname" . }}-config
- name: tmp
  emptyDir: {}
{{- if .Values.driverRoot }}
- name: driver-root
  hostPath:
    path: {{ .Values.driverRoot }}
    type: Directory
{{- end }}
{{- end -}}

{{- define "kgpu.commonMounts" -}}
- name: config
  mountPath: /etc/kgpu
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- if .Values.driverRoot }}
- name: driver-root
  mountPath: /driver-root
  readOnly: true
{{- end }}
{{- end -}}

{{/* The release's labels plus one component's; call with (dict "root" $ "component" "device-plugin"). */}}
{{- define "kgpu.componentLabels" -}}
{{ include "kgpu.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* "true" when a config shares GPUs dynamically (sharing.mps.dynamic, in config or in one of the named configs
     the config-manager may choose): the device plugin then calls the API. */}}
{{- define "kgpu.dynamicShares" -}}
{{- $found := false -}}
{{- range $config := prepend (values (default dict .Values.configs)) .Values.config -}}
{{- $sharing := default dict (get (default dict $config) "sharing") -}}
{{- if hasKey (default dict (get $sharing "mps")) "dynamic" -}}{{- $found = true -}}{{- end -}}
{{- end -}}
{{- $found | toString -}}
{{- end -}}

{{/* The configs that share GPUs through MPS (sharing.mps: slices or dynamic shares), comma-separated: "config" and
     "configs.NAME" for each named config the config-manager may choose. */}}
{{- define "kgpu.mpsConfigs" -}}
{{- $found := list -}}
{{- if (get (default dict (get (default dict .Values.config) "sharing")) "mps") -}}{{- $found = append $found "config" -}}{{- end -}}
{{- if .Values.configManager.enabled -}}
{{- range $name, $config := (default dict .Values.configs) -}}
{{- if (get (default dict (get (default dict $config) "sharing")) "mps") -}}{{- $found = append $found (printf "configs.%s" $name) -}}{{- end -}}
{{- end -}}
{{- end -}}
{{- join ", " $found -}}
{{- end -}}
