#!/usr/bin/env bash
# Builds the initramfs the VM tests boot: busybox-static, the agent and the workloads with
# their shared libraries and the loader, the guest /init and scenarios (tests/vm/guest), and
# optionally kernel modules from the kernel's cached lib/modules tree.
#
#   tests/vm/make_initramfs.sh OUT.cpio.gz ISOSCOPE_BIN WORKLOADS_DIR [KERNEL_DIR MODULE...]
#
# MODULE is a path relative to KERNEL_DIR/modules/kernel (e.g. net/core/... .ko); it lands in
# /modules/<basename> and the guest insmods it when named in isoscope.modules= on the command
# line. The staging tree is OUT.d next to OUT (in the build tree), rebuilt every time.
set -euo pipefail

if [ $# -lt 3 ]; then
  echo "usage: $0 OUT.cpio.gz ISOSCOPE_BIN WORKLOADS_DIR [KERNEL_DIR MODULE...]" >&2
  exit 2
fi
out=$1 isoscope=$2 workloads=$3
shift 3
kernel_dir=${1:-}
[ $# -gt 0 ] && shift
here=$(cd "$(dirname "$0")" && pwd)

busybox=$(command -v busybox || true)
if [ -z "$busybox" ] || ldd "$busybox" >/dev/null 2>&1; then
  echo "make_initramfs: a statically linked busybox is needed (package busybox-static)" >&2
  exit 3
fi
for tool in cpio gzip strip; do
  command -v $tool >/dev/null || { echo "make_initramfs: $tool not found" >&2; exit 3; }
done

stage="$out.d"
rm -rf "$stage"
mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,run,etc,lib64,modules,isoscope/workloads,scenarios}
cp "$busybox" "$stage/bin/busybox"
ln -s busybox "$stage/bin/sh"

# copy_elf SRC DEST: copies a program (stripped) and every library ldd names, at the same
# absolute paths, plus the loader.
copy_elf() {
  strip --strip-debug -o "$2" "$1"
  chmod 755 "$2"
  ldd "$1" | awk '/=> \// {print $3} /^[[:space:]]*\/[^ ]+ \(/ {print $1}' | while read -r lib; do
    [ -e "$stage$lib" ] && continue
    mkdir -p "$stage$(dirname "$lib")"
    cp -L "$lib" "$stage$lib"
  done
}
copy_elf "$isoscope" "$stage/isoscope/isoscope"
for wl in "$workloads"/*; do
  [ -f "$wl" ] && [ -x "$wl" ] && copy_elf "$wl" "$stage/isoscope/workloads/$(basename "$wl")"
done
[ -e "$stage/lib64/ld-linux-x86-64.so.2" ] || cp -L /lib64/ld-linux-x86-64.so.2 "$stage/lib64/"

for m in "$@"; do
  cp "$kernel_dir/modules/kernel/$m" "$stage/modules/"
done

cp "$here/guest/init" "$stage/init"
chmod 755 "$stage/init"
cp "$here"/guest/scenarios/*.sh "$stage/scenarios/"

(cd "$stage" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -1 >"$out.tmp"
mv "$out.tmp" "$out"
echo "$out"
