#!/usr/bin/env bash
# Source this on the device machine (GPU box, no network): installs the carried wheels (.whl/) and
# kgpu from this checkout into /tmp/site, and puts a `kgpu` launcher on PATH.
#   source scripts/device/setup.sh
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "setup: wheel install failed" >&2; return 1 2>/dev/null || exit 1; }
fi
export PYTHONPATH="$PWD/src:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
# Byte-code, as kgpu's image has it (deploy/image/build.sh runs compileall): without .pyc files (and where
# PYTHONDONTWRITEBYTECODE is set) every daemon compiles its modules at each start, which costs time and
# leaves memory behind (pynvml's 330 KB source: ~13 MB resident), so the guard rails would measure that.
python3 -m compileall -q -j 0 /tmp/site src >/dev/null 2>&1 || echo "setup: compileall reported errors: some modules compile at each start" >&2
mkdir -p /tmp/kgpu-bin
printf '#!/bin/sh\nexec python3 -m kgpu "$@"\n' > /tmp/kgpu-bin/kgpu
chmod +x /tmp/kgpu-bin/kgpu
export PATH="/tmp/kgpu-bin:$PATH"
: "${OUT:=/tmp/kgpu-out}"; mkdir -p "$OUT"; export OUT
