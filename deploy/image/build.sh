#!/usr/bin/env bash
# Build kgpu's image without a Docker daemon: a docker-archive (with an OCI-compatible manifest) that
# `ctr images import`, `docker load` and `podman load` accept. deploy/README.md says how and why.
#
#   deploy/image/build.sh [OUT.tar]        # default build/kgpu-image.tar; `make image` runs this
#
# Steps, each with the tool made for it:
#   1. pip wheel         kgpu's wheel from this checkout
#   2. pip download      the locked wheels (deploy/image/requirements.txt, --require-hashes), cached
#   3. mmdebstrap        a Debian 12 rootfs (essential packages + python3 + libstdc++6 for grpcio), the
#                        wheels installed by pip running inside it (every native library they need checked
#                        with ldd), as one tar, reproducible under SOURCE_DATE_EPOCH
#   4. umoci             that tar as the single layer of an OCI image, with the image config
#   5. skopeo            the OCI image written as a docker-archive tagged IMAGE_REF
# Same inputs (checkout, lock, Debian mirror state, SOURCE_DATE_EPOCH) → same bytes, so the same digest.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$REPO"
OUT="${1:-build/kgpu-image.tar}"
PYTHON="${PYTHON:-.venv/bin/python}"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)"
IMAGE_REF="${IMAGE_REF:-local/kgpu:$VERSION}"
SUITE=bookworm                       # Debian 12: its python3 is the CPython 3.11 the lock is for
CACHE="${KGPU_IMAGE_CACHE:-$REPO/build/image-cache}"
# The commit's time, so a rebuild of the same commit is bit-identical; a dirty tree still uses HEAD's time.
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"
CREATED="$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)"

say() { printf 'image: %s\n' "$*" >&2; }
die() { printf 'image: %s\n' "$*" >&2; exit 1; }

need=()
for tool in mmdebstrap umoci skopeo; do command -v "$tool" >/dev/null || need+=("$tool"); done
if ((${#need[@]})); then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "installing ${need[*]} (Debian packages)"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    else
        die "needs ${need[*]}: apt-get install ${need[*]} (as root)"
    fi
fi
[ "$(id -u)" = 0 ] || die "mmdebstrap builds the rootfs in root mode: run as root"
[ -x "$PYTHON" ] || die "no $PYTHON: run make image (it creates .venv first) or set PYTHON"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/kgpu-image.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/wheels" "$CACHE/wheels" "$CACHE/debs" "$(dirname "$OUT")"

say "1/5 kgpu wheel"
# From a copy of what the wheel is made of: setuptools reuses the checkout's build/lib, where modules deleted
# from src/ since an earlier build stay and went into the wheel (an image from a worktree shipped them).
mkdir "$WORK/src"
tar -c --exclude=__pycache__ --exclude='*.egg-info' pyproject.toml README.md src | tar -x -C "$WORK/src"
"$PYTHON" -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir "$WORK/kgpu" "$WORK/src" 2>&1 | grep -v 'is ignored' >&2 || true
cp "$WORK"/kgpu/kgpu-*.whl "$WORK/wheels/"

say "2/5 locked wheels (cache $CACHE/wheels)"
# The lock's pip runs inside the rootfs: same flags as scripts/lock_image.py, so the same files.
"$PYTHON" -m pip download --quiet --no-deps --require-hashes --dest "$CACHE/wheels" \
    --only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none \
    $("$PYTHON" -c 'import sys; sys.path.insert(0, "scripts"); import lock_image as l; print(" ".join(f"--platform {p}" for p in (*l.PLATFORMS, "any")))') \
    -r deploy/image/requirements.txt -r deploy/image/pip.txt 2>&1 | grep -v 'is ignored' >&2 || true
# Extra wheels left in the cache by older locks are harmless: pip installs the pinned files only.
cp -l "$CACHE"/wheels/*.whl "$WORK/wheels/" 2>/dev/null || cp "$CACHE"/wheels/*.whl "$WORK/wheels/"
cp deploy/image/requirements.txt "$WORK/wheels/requirements.txt"

say "3/5 Debian $SUITE rootfs with python3 and kgpu (mmdebstrap)"
# The build machine's apt sources (Debian 12 like the image), so the image gets the same security updates.
sources=()
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -s "$f" ] && grep -q '^[^#]' "$f" && sources+=("$f")
done
((${#sources[@]})) || die "no apt sources in /etc/apt"
# pip runs from its wheel inside the rootfs (python3 pip.whl/pip), so the image's python3 installs for itself
# (scripts in /usr/local/bin with its #!) and no pip is left behind. Offline, pinned, no byte-code yet.
PIP_WHEEL="pip-$(sed -n 's/^pip==\([^ ]*\) .*/\1/p' deploy/image/pip.txt)-py3-none-any.whl"
export PIP_INSTALL="python3 /tmp/wheels/$PIP_WHEEL/pip install --quiet --no-index --no-deps --break-system-packages --root-user-action=ignore --no-cache-dir --no-compile --disable-pip-version-check --no-warn-script-location"
# Byte-code is compiled last with -f: every .pyc hash-checked, none left with a timestamp header (which holds
# the install time, so would change the digest). Debian's .debs are cached in $CACHE/debs between builds.
# No docs, man pages or translations: nothing in the image reads them (the copyright files stay).
# merged /usr the way debootstrap (and Debian's own container images) set it up, without usrmerge and the perl
# it needs.
mmdebstrap ${MMDEBSTRAP_VERBOSE:---quiet} --mode=root --variant=essential --format=tar \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --include=python3,libstdc++6 \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/lintian/*' \
    --dpkgopt='path-exclude=/usr/lib/x86_64-linux-gnu/gconv/*' \
    --skip=download/empty --skip=essential/unlink \
    --setup-hook='mkdir -p "$1/var/cache/apt/archives"' \
    --setup-hook="sync-in $CACHE/debs /var/cache/apt/archives/" \
    --customize-hook="sync-out /var/cache/apt/archives $CACHE/debs" \
    --customize-hook='mkdir "$1/tmp/wheels"' \
    --customize-hook="sync-in $WORK/wheels /tmp/wheels" \
    --customize-hook='chroot "$1" env -i PATH=/usr/sbin:/usr/bin SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH sh -c "$PIP_INSTALL --find-links /tmp/wheels --require-hashes -r /tmp/wheels/requirements.txt"' \
    --customize-hook='chroot "$1" env -i PATH=/usr/sbin:/usr/bin SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH sh -c "$PIP_INSTALL /tmp/wheels/kgpu-*.whl"' \
    --customize-hook='chroot "$1" python3 -m compileall -q -f --invalidation-mode unchecked-hash /usr/local/lib/python3.11/dist-packages >/dev/null' \
    --customize-hook='rm -rf "$1/tmp/wheels" "$1"/var/cache/* "$1"/var/log/* "$1/etc/resolv.conf" "$1/etc/hostname"' \
    --customize-hook='echo "nonroot:x:65532:65532:kgpu:/nonexistent:/usr/sbin/nologin" >> "$1/etc/passwd"' \
    --customize-hook='echo "nonroot:x:65532:" >> "$1/etc/group"' \
    --customize-hook='chroot "$1" kgpu --version' \
    --customize-hook='if chroot "$1" find /usr/local/lib/python3.11/dist-packages -name "*.so*" -exec ldd {} + | grep "not found"; then echo "image: a shared library the wheels need is not in the image (above)" >&2; exit 1; fi' \
    --customize-hook='chroot "$1" dpkg-query -W -f "\${Package}=\${Version}\n" > "$1/usr/share/kgpu-image-packages.txt"' \
    "$SUITE" "$WORK/rootfs.tar" "${sources[@]}"

say "4/5 OCI image (umoci)"
umoci init --layout "$WORK/oci"
umoci new --image "$WORK/oci:kgpu"
umoci raw add-layer --image "$WORK/oci:kgpu" \
    --history.created "$CREATED" --history.created_by "deploy/image/build.sh (mmdebstrap $SUITE + kgpu $VERSION)" \
    "$WORK/rootfs.tar"
# Same entrypoint, user and environment as deploy/Dockerfile.
umoci config --image "$WORK/oci:kgpu" --no-history --created "$CREATED" \
    --config.user 65532:65532 --config.entrypoint kgpu --config.cmd --help \
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --config.env LANG=C.UTF-8 --config.env PYTHONDONTWRITEBYTECODE=1 --config.env PYTHONUNBUFFERED=1 \
    --config.label "org.opencontainers.image.title=kgpu" \
    --config.label "org.opencontainers.image.version=$VERSION" \
    --config.label "org.opencontainers.image.created=$CREATED"

say "5/5 docker-archive $OUT ($IMAGE_REF, skopeo)"
rm -f "$OUT"
skopeo copy --quiet "oci:$WORK/oci:kgpu" "docker-archive:$OUT:$IMAGE_REF"

unpacked=$(tar -tvf "$WORK/rootfs.tar" | awk '{s += $3} END {print s}')
config_digest=$(skopeo inspect --raw --config "docker-archive:$OUT" 2>/dev/null | sha256sum | cut -d' ' -f1)
printf 'image %s: %s\n' "$IMAGE_REF" "$OUT"
printf '  size:    %s MB archive, %s MB unpacked\n' \
    "$(( $(stat -c %s "$OUT") / 1000000 ))" "$(( unpacked / 1000000 ))"
printf '  digest:  sha256:%s (archive)\n' "$(sha256sum "$OUT" | cut -d' ' -f1)"
printf '  image ID: sha256:%s (config; docker images shows it)\n' "$config_digest"
