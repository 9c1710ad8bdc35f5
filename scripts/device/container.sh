# Sourced by device scripts: `in_container USER CMD...` runs CMD as the chart's toolkit-free install runs kgpu's
# node components: a private mount namespace in which the driver root ($DRIVER, default /usr/local/nvidia) is only
# a read-only mount at /driver-root and an empty tmpfs over its host path, with the chart's environment alone
# (NVIDIA_DRIVER_ROOT = host path, CONTAINER_DRIVER_ROOT = /driver-root; plus PYTHONPATH for this checkout).
#
# The mount stays in the namespace, but the directory it is mounted on does not: `mkdir /driver-root` inside
# `unshare --mount` makes it on the host, where an empty /driver-root was left behind (NVIDIA's default mount
# point, where every later kgpu run looks for the driver first). So the mount point is made here only when the
# host lacks it, and `container_cleanup` (the caller's EXIT trap) removes what was made.
DRIVER="${DRIVER:-${KGPU_DRIVER_ROOT:-/usr/local/nvidia}}"
CONTAINER_MOUNT_POINT=/driver-root
_container_made_mount_point=
if [ ! -e "$CONTAINER_MOUNT_POINT" ]; then
  mkdir "$CONTAINER_MOUNT_POINT" && _container_made_mount_point=1
fi

container_cleanup() {
  if [ -n "$_container_made_mount_point" ]; then rmdir "$CONTAINER_MOUNT_POINT" 2>/dev/null || true; fi
}

in_container() {
  local user="$1"; shift
  unshare --mount --propagation private bash -c '
    set -e
    mount --bind "$0" /driver-root && mount -o remount,bind,ro /driver-root
    mount -t tmpfs none "$0"
    shift; user="$1"; shift
    exec setpriv --reuid "$user" --regid "$user" --clear-groups env -i \
      PATH=/tmp/kgpu-bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin PYTHONPATH="${PYTHONPATH:-}" \
      NODE_NAME=gpu-node NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=utility \
      NVIDIA_DRIVER_ROOT='"$DRIVER"' CONTAINER_DRIVER_ROOT=/driver-root KGPU_LOG_LEVEL=warning "$@"
  ' "$DRIVER" _ "$user" "$@"
}
