#!/usr/bin/env bash
# Builds pymirror's image with podman, from Debian packages and this tree's wheel:
#
#   deploy/container/build.sh [IMAGE]        (IMAGE defaults to pymirror:latest)
#
# No image registry is needed. The base is a Debian 12 root filesystem made by
# mmdebstrap (Python 3.11, CA certificates, nothing else: no shell tools, no apt, no
# compiler) and imported once per recipe. The wheel is PYMIRROR_WHEEL when set (say, the
# manylinux one CI builds), else built from this tree; its dependencies are fetched as
# wheels for the image's Python, whatever Python runs this script.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
image="${1:-pymirror:latest}"
suite=bookworm
python=3.11
mirror="${PYMIRROR_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
packages=python3,python3-venv,ca-certificates,passwd
# Documentation, manuals and translations are left out: the image runs one program.
debstrap=(--variant=essential --include="$packages"
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*')
# The base is made once per recipe: its tag names the recipe's digest.
base="localhost/pymirror-base:$suite-$(echo "$suite ${debstrap[*]}" | sha256sum | cut -c1-12)"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if ! podman image exists "$base"; then
  echo "== base $base: Debian $suite from $mirror"
  mmdebstrap --quiet "${debstrap[@]}" "$suite" "$work/base.tar" "$mirror"
  podman import --quiet --change 'CMD ["/bin/sh"]' "$work/base.tar" "$base" >/dev/null
  rm -f "$work/base.tar"
fi

echo "== wheels"
mkdir -p "$work/context/wheels"
if [ -n "${PYMIRROR_WHEEL:-}" ]; then
  cp "$PYMIRROR_WHEEL" "$work/context/wheels/"
else
  python3 -m pip wheel --quiet --no-deps --wheel-dir "$work/context/wheels" "$root"
fi
arch="$(uname -m)"
python3 -m pip download --quiet --only-binary=:all: --implementation cp \
  --python-version "$python" --platform "manylinux2014_$arch" \
  --platform "manylinux_2_17_$arch" --platform "manylinux_2_28_$arch" --platform "linux_$arch" \
  --dest "$work/context/wheels" "$work"/context/wheels/pymirror_proxy-*.whl

echo "== image $image"
cp "$here/Containerfile" "$work/context/"
podman build --quiet --layers=false --network=none --build-arg "BASE=$base" --tag "$image" \
  --file "$work/context/Containerfile" "$work/context" >/dev/null
podman image inspect --format '{{.Id}} {{.Size}} bytes' "$image"
