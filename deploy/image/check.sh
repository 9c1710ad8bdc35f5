#!/usr/bin/env bash
# Check that the image archive `make image` wrote is what the loaders take, with the loaders themselves.
# `make image` runs it after build.sh; deploy/README.md says what was verified where.
#
#   deploy/image/check.sh [ARCHIVE]        # default build/kgpu-image.tar
#
#   1. skopeo inspect   the docker-archive as `docker load` reads it (manifest.json, config, one layer): its
#                       reference, and the entrypoint, command and user of deploy/Dockerfile
#   2. podman load      into a throwaway store (vfs), when podman is installed
#   3. docker load      into a throwaway dockerd with its own containerd, when a dockerd is found ($DOCKERD or
#                       PATH), then `docker run IMAGE --version`
# `ctr images import` is make e2e's: the lab's containerd imports the archive and runs every node component.
# A loader that is not installed is said to be skipped; one that refuses the archive fails the check.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$REPO"
ARCHIVE="$(realpath "${1:-build/kgpu-image.tar}")"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)"
IMAGE_REF="${IMAGE_REF:-local/kgpu:$VERSION}"

say() { printf 'image check: %s\n' "$*" >&2; }
die() { printf 'image check: FAILED: %s\n' "$*" >&2; exit 1; }
[ -f "$ARCHIVE" ] || die "no $ARCHIVE: run make image"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/kgpu-image-check.XXXXXX")"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null && while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done; done
    rm -rf "$WORK"
    rmdir /sys/fs/cgroup/kgpu-image-check /sys/fs/cgroup/*/kgpu-image-check 2>/dev/null || true  # dockerd's, empty
}
trap cleanup EXIT

# deploy/Dockerfile's ENTRYPOINT, CMD and USER: the image must match them (deploy/README.md says equivalent).
want="$(python3 - deploy/Dockerfile <<'PY'
import json, re, sys
text = open(sys.argv[1]).read()
get = lambda key: re.findall(rf"^{key} (.+)$", text, re.M)[-1]
print(json.dumps({"Entrypoint": json.loads(get("ENTRYPOINT")), "Cmd": json.loads(get("CMD")), "User": get("USER")}))
PY
)"

# 1. The format: what docker load reads.
skopeo inspect --config "docker-archive:$ARCHIVE" > "$WORK/config.json" || die "skopeo cannot read $ARCHIVE as a docker-archive"
ref="$(tar -xOf "$ARCHIVE" manifest.json | python3 -c 'import json,sys; print(",".join(json.load(sys.stdin)[0]["RepoTags"]))')"
python3 - "$WORK/config.json" "$want" "$ref" "$IMAGE_REF" <<'PY' || die "the archive's config is not deploy/Dockerfile's"
import json, sys
config = json.load(open(sys.argv[1]))["config"]
want, ref, image_ref = json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
got = {k: config.get(k) for k in want}
assert got == want, f"config {got} != deploy/Dockerfile's {want}"
assert ref in (image_ref, f"docker.io/{image_ref}"), f"tagged {ref}, not {image_ref}"
PY
say "skopeo inspect docker-archive: ok ($ref, entrypoint/cmd/user as deploy/Dockerfile: $want)"

# 2. podman load.
if command -v podman >/dev/null; then
    podman=(podman --root "$WORK/podman/root" --runroot "$WORK/podman/run" --storage-driver vfs)
    "${podman[@]}" load --quiet -i "$ARCHIVE" > "$WORK/podman.out" 2>&1 || die "podman load: $(tail -3 "$WORK/podman.out")"
    user="$("${podman[@]}" image inspect "$IMAGE_REF" --format '{{.Config.User}} {{.Config.Entrypoint}}')" \
        || die "podman load did not give $IMAGE_REF"
    say "podman load: ok ($(podman --version), $(tail -1 "$WORK/podman.out"), user/entrypoint $user)"
else
    say "podman load: skipped (no podman; apt-get install podman)"
fi

# 3. docker load, with a dockerd and containerd of our own (never the machine's: that may be a cluster's).
dockerd="${DOCKERD:-$(command -v dockerd || true)}"
if [ -n "$dockerd" ] && command -v containerd >/dev/null; then
    docker="$(dirname "$dockerd")/../bin/docker"
    [ -x "$docker" ] || docker="$(command -v docker)" || die "dockerd at $dockerd but no docker client"
    d="$WORK/docker"
    mkdir -p "$d/ctd" "$d/data" "$d/exec"
    printf 'version = 2\nroot = "%s"\nstate = "%s"\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n[grpc]\n  address = "%s"\n[ttrpc]\n  address = "%s"\n' \
        "$d/ctd/root" "$d/ctd/state" "$d/ctd/sock" "$d/ctd/sock.ttrpc" > "$d/ctd/config.toml"
    containerd --config "$d/ctd/config.toml" > "$d/containerd.log" 2>&1 &
    pids+=($!)
    echo '{}' > "$d/daemon.json"
    for _ in $(seq 50); do [ -S "$d/ctd/sock" ] && break; sleep 0.2; done
    PATH="$(dirname "$docker"):$PATH" "$dockerd" --config-file "$d/daemon.json" --containerd "$d/ctd/sock" \
        --data-root "$d/data" --exec-root "$d/exec" --pidfile "$d/dockerd.pid" -H "unix://$d/docker.sock" \
        --bridge=none --iptables=false --ip-masq=false --storage-driver vfs --cgroup-parent kgpu-image-check > "$d/dockerd.log" 2>&1 &
    pids=("$!" "${pids[@]}")
    docker=("$docker" -H "unix://$d/docker.sock")
    for _ in $(seq 100); do "${docker[@]}" version >/dev/null 2>&1 && break; sleep 0.2; done
    "${docker[@]}" version >/dev/null 2>&1 || die "dockerd did not start: $(tail -3 "$d/dockerd.log")"
    loaded="$("${docker[@]}" load -i "$ARCHIVE" 2>&1)" || die "docker load: $loaded"
    ran="$("${docker[@]}" run --rm --network none "$IMAGE_REF" --version 2>&1)" || die "docker run $IMAGE_REF --version: $ran"
    say "docker load: ok (dockerd $("${docker[@]}" version --format '{{.Server.Version}}'), $loaded, docker run: $ran)"
else
    say "docker load: skipped (no dockerd: DOCKERD=/path/to/dockerd, see deploy/README.md)"
fi
