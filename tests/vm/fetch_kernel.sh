#!/usr/bin/env bash
# Downloads and extracts one Debian kernel package into a cache in the BUILD tree.
#
#   tests/vm/fetch_kernel.sh NAME META_PACKAGE CACHE_ROOT
#
# Resolves META_PACKAGE (e.g. linux-image-cloud-amd64) to the current versioned package with
# `apt-cache depends`, downloads exactly that package with `apt-get download` and extracts it
# with `dpkg-deb -x` into CACHE_ROOT/NAME/. Prints the kernel directory on stdout; it holds
#   vmlinuz       the kernel image
#   System.map    its symbols (run_vm.py names where the vCPUs were when a guest hangs)
#   modules/      the package's lib/modules/<release> tree
#   release       the kernel release string (e.g. 6.1.0-56-cloud-amd64)
#   package       the versioned package name and version that were extracted
# A complete cache entry is reused. `apt-get update` runs once when apt knows nothing of the
# meta package. When the package cannot be obtained (no apt lists, no network to the mirror)
# and there is no cached copy, exits 77 with a "SKIP:" line on stderr.
set -euo pipefail

if [ $# -ne 3 ]; then
  echo "usage: $0 NAME META_PACKAGE CACHE_ROOT" >&2
  exit 2
fi
name=$1 meta=$2 cache_root=$3
dir="$cache_root/$name"
mkdir -p "$cache_root"

log() { echo "fetch_kernel[$name]: $*" >&2; }

cached_ok() {
  [ -f "$dir/.complete" ] && [ -f "$dir/vmlinuz" ] && [ -f "$dir/System.map" ] && [ -d "$dir/modules" ]
}

resolve() {
  # The first "Depends: linux-image-<version>..." of the meta package.
  apt-cache depends "$meta" 2>/dev/null | awk '/^ *Depends: linux-image-/ {print $2; exit}'
}

pkg=$(resolve || true)
if [ -z "$pkg" ]; then
  if cached_ok; then
    log "apt-cache does not resolve $meta; reusing cached $(cat "$dir/package")"
    echo "$dir"
    exit 0
  fi
  log "apt-cache knows no $meta; running apt-get update"
  if ! apt-get update -qq >&2; then
    log "apt-get update failed"
  fi
  pkg=$(resolve || true)
fi
if [ -z "$pkg" ]; then
  if cached_ok; then
    echo "$dir"
    exit 0
  fi
  echo "SKIP: cannot resolve $meta with apt-cache (no apt lists / no network to the Debian mirror) and no cached kernel in $dir" >&2
  exit 77
fi

version=$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ {print $2; exit}')
want="$pkg $version"
if cached_ok && [ "$(cat "$dir/package")" = "$want" ]; then
  echo "$dir"
  exit 0
fi

log "downloading $want"
tmp=$(mktemp -d "$cache_root/.fetch-$name.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"  # apt-get download drops privileges to _apt when it can
if ! (cd "$tmp" && apt-get download -q "$pkg" >&2); then
  if cached_ok; then
    log "download failed; reusing cached $(cat "$dir/package")"
    echo "$dir"
    exit 0
  fi
  echo "SKIP: cannot download $pkg from the Debian mirror (no network?) and no cached kernel in $dir" >&2
  exit 77
fi
deb=$(ls "$tmp"/*.deb)
mkdir "$tmp/x"
dpkg-deb -x "$deb" "$tmp/x"
vmlinuz=$(ls "$tmp"/x/boot/vmlinuz-* | head -n1)
release=${vmlinuz##*/vmlinuz-}
if [ ! -d "$tmp/x/lib/modules/$release" ]; then
  log "package has no lib/modules/$release"
  exit 1
fi

new="$tmp/entry"
mkdir "$new"
mv "$vmlinuz" "$new/vmlinuz"
mv "$tmp/x/lib/modules/$release" "$new/modules"
mv "$tmp/x/boot/System.map-$release" "$new/System.map"
[ -f "$tmp/x/boot/config-$release" ] && mv "$tmp/x/boot/config-$release" "$new/config"
echo "$release" >"$new/release"
echo "$want" >"$new/package"
touch "$new/.complete"
rm -rf "$dir"
mv "$new" "$dir"
log "extracted $release into $dir"
echo "$dir"
