#!/usr/bin/env bash
# Prove `make image` reproducible: build this commit's image here and again in a fresh clone of it (what a
# checkout has lying around must not reach the image), and compare the digests. As root, ~3 minutes.
#
#   deploy/image/reproduce.sh              # exit 0 and "same digest" when the two archives are identical
set -euo pipefail

REPO="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$REPO"
say() { printf 'reproduce: %s\n' "$*" >&2; }
if [ -n "$(git status --porcelain -- pyproject.toml README.md src deploy/image)" ]; then
    say "the image's inputs have uncommitted changes (git status): commit them, a fresh clone has only HEAD"
    exit 2
fi
PYTHON="$(realpath -s "${PYTHON:-.venv/bin/python}")"  # -s: the venv's link, not the interpreter behind it
[ -x "$PYTHON" ] || { say "no $PYTHON: make image first (it creates .venv)"; exit 2; }
CLONE="$(mktemp -d "${TMPDIR:-/tmp}/kgpu-reproduce.XXXXXX")"
trap 'rm -rf "$CLONE"' EXIT

say "1/2 build in this checkout"
bash deploy/image/build.sh build/kgpu-image.tar >&2
say "2/2 build in a fresh clone of $(git rev-parse --short HEAD) (same wheel and .deb caches)"
git clone --quiet "$REPO" "$CLONE/kgpu"
(cd "$CLONE/kgpu" && git checkout --quiet "$(git -C "$REPO" rev-parse HEAD)" &&
    PYTHON="$PYTHON" KGPU_IMAGE_CACHE="$REPO/build/image-cache" bash deploy/image/build.sh "$CLONE/kgpu-image.tar") >&2
here="$(sha256sum build/kgpu-image.tar | cut -d' ' -f1)"
there="$(sha256sum "$CLONE/kgpu-image.tar" | cut -d' ' -f1)"
if [ "$here" = "$there" ]; then
    echo "reproduce: same digest sha256:$here (this checkout and a fresh clone of $(git rev-parse --short HEAD))"
else
    echo "reproduce: DIFFERENT digests: here sha256:$here, fresh clone sha256:$there"
    exit 1
fi
