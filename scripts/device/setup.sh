#!/usr/bin/env bash
# Source this on the device machine (GPU box, no network): installs the carried wheels (.whl/) and
# kgpu from this checkout into /tmp/site, and puts a `kgpu` launcher on PATH.
#   source scripts/device/setup.sh
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "setup: wheel install failed" >&2; return 1 2>/dev/null || exit 1; }
fi
export PYTHONPATH="$PWD/src:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p /tmp/kgpu-bin
printf '#!/bin/sh\nexec python3 -m kgpu "$@"\n' > /tmp/kgpu-bin/kgpu
chmod +x /tmp/kgpu-bin/kgpu
export PATH="/tmp/kgpu-bin:$PATH"
: "${OUT:=/tmp/kgpu-out}"; mkdir -p "$OUT"; export OUT
