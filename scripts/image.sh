#!/usr/bin/env bash
# Container images with Debian's podman (these machines have no Docker
# engine and reach no image registry; see docs/deployment.md).
#
#   scripts/image.sh deps              podman and its helpers, and the base
#                                      image debian:bookworm-slim made with
#                                      debootstrap from apt's own mirror
#   scripts/image.sh build BINARY [TAG]
#                                      the runtime image (docker/Dockerfile,
#                                      target `prebuilt`) around a binary
#                                      built outside it, debug info stripped
#   scripts/image.sh run TAG ARGS...   podman run with the settings that
#                                      work here (runc, cgroupfs, host
#                                      network, explicit ulimits)
#   scripts/image.sh tools             localhost/nisshi:local and
#                                      localhost/prometheus:local around the
#                                      host's broker and Prometheus, for
#                                      docker/compose.local.yml
#   scripts/image.sh compose ARGS...   podman-compose (PyPI, in the venv) with
#                                      docker/compose.yml and compose.local.yml
#
# Idempotent: `deps` does nothing when everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

# What works on these machines' kernels (measured, ../shared/CONTAINERS.md).
PODMAN=(podman --runtime runc --cgroup-manager=cgroupfs)
RUN_ARGS=(--network=host --ulimit nofile=16384:16384 --ulimit nproc=4096:4096)
BASE=localhost/debian:bookworm-slim

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

deps() {
  local packages=(podman debootstrap uidmap slirp4netns fuse-overlayfs runc binutils python3-venv)
  local missing=()
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  if ! "${PODMAN[@]}" image exists "$BASE"; then
    # The mirror apt uses, so no registry or other host is needed.
    local mirror
    mirror="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
    [ -n "$mirror" ] || mirror="$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list)"
    local rootfs
    rootfs="$(mktemp -d)"
    echo "making $BASE with debootstrap from $mirror"
    $sudo debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >/dev/null
    # Close to the official slim image: no downloaded packages, apt lists,
    # documentation or translations.
    $sudo rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
      "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* \
      "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*
    $sudo tar -C "$rootfs" -c . | "${PODMAN[@]}" import - "$BASE" >/dev/null
    $sudo rm -rf "$rootfs"
  fi
  local venv="$ACCRUAL_CACHE/venv"
  if ! "$venv/bin/podman-compose" --version >/dev/null 2>&1; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "podman-compose==1.6.0"
  fi
}

# An image around one of this machine's programs (glibc only).
program_image() {
  local program="$1" tag="$2" context
  context="$(mktemp -d)"
  cp "$(command -v "$program" || echo "$program")" "$context/$(basename "$program")"
  "${PODMAN[@]}" build --isolation chroot --format docker --build-arg "PROGRAM=$(basename "$program")" \
    -t "$tag" -f docker/host-program.Dockerfile "$context" >/dev/null
  rm -rf "$context"
  echo "$tag"
}

tools() {
  program_image "$(scripts/broker.sh path)" localhost/nisshi:local
  program_image prometheus localhost/prometheus:local
}

build() {
  local binary="$1" tag="${2:-localhost/accrual:test}"
  local context
  context="$(mktemp -d)"
  trap 'rm -rf "$context"' RETURN
  objcopy --strip-debug "$binary" "$context/accrual"
  cp -r config "$context/config"
  "${PODMAN[@]}" build --isolation chroot --format docker --target prebuilt -t "$tag" -f docker/Dockerfile "$context" >&2
  echo "$tag"
}

case "${1:-}" in
  deps) deps ;;
  build) shift; build "$@" ;;
  run) shift; tag="$1"; shift; exec "${PODMAN[@]}" run "${RUN_ARGS[@]}" "$tag" "$@" ;;
  podman) shift; exec "${PODMAN[@]}" "$@" ;;
  tools) tools ;;
  compose)
    shift
    exec "$ACCRUAL_CACHE/venv/bin/podman-compose" --podman-args="--runtime runc --cgroup-manager=cgroupfs" \
      -f docker/compose.yml -f docker/compose.local.yml "$@" ;;
  *) sed -n '2,25p' "$0" >&2; exit 2 ;;
esac
