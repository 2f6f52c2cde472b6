#!/usr/bin/env bash
# Debian's stock kernel for the VM agents (LNST_AGENTS=vm), unpacked into the project's cache:
#   .cache/vm-kernel/<release>/boot/vmlinuz-<release>
#   .cache/vm-kernel/<release>/lib/modules/<release>/   (with modules.dep from `depmod -b`)
#   .cache/vm-kernel/env                                 (LNST_VM_KERNEL=..., LNST_VM_MODULES=...)
# The package is fetched with `apt-get download` and unpacked with `dpkg-deb -x`: nothing is
# installed on this machine (no kernel, no initramfs, no bootloader entry). Idempotent: a
# complete cache is reused as it is. Prints the two variables (source `.cache/vm-kernel/env`).
#
# Needs: apt-get, dpkg-deb, depmod (Debian's kmod). Override the package with
# LNST_VM_KERNEL_PACKAGE=linux-image-6.1.0-NN-amd64; the cache directory with LNST_VM_CACHE.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${LNST_VM_CACHE:-$PWD/.cache/vm-kernel}"
mkdir -p "$cache"

pkg="${LNST_VM_KERNEL_PACKAGE:-}"
if [ -z "$pkg" ]; then
    # The versioned image behind the meta package, e.g. linux-image-6.1.0-56-amd64.
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
        awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
    if [ -z "$pkg" ] && [ -f "$cache/env" ]; then
        # No apt metadata (offline): keep what the cache already has.
        cat "$cache/env"
        exit 0
    fi
    if [ -z "$pkg" ]; then
        apt-get update -q >&2
        pkg=$(apt-cache depends linux-image-amd64 |
            awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
    fi
fi
case "$pkg" in
linux-image-[0-9]*) ;;
*)
    echo "vm-kernel.sh: cannot tell which linux-image-* package to use (got '$pkg')" >&2
    exit 1
    ;;
esac
release="${pkg#linux-image-}"
dir="$cache/$release"
kernel="$dir/boot/vmlinuz-$release"
modules="$dir/lib/modules/$release"

if [ ! -f "$dir/.complete" ]; then
    echo "vm-kernel.sh: fetching $pkg into $dir (not installed on this machine)" >&2
    rm -rf "$dir"
    command -v depmod >/dev/null 2>&1 || {
        echo "vm-kernel.sh: depmod not found (apt-get install kmod)" >&2
        exit 1
    }
    # The download goes to a directory the _apt user can enter; the unpacking to the cache.
    dl=$(mktemp -d)
    tmp=$(mktemp -d "$cache/.unpack.XXXXXX")
    trap 'rm -rf "$dl" "$tmp"' EXIT
    chmod 755 "$dl"
    chown _apt "$dl" 2>/dev/null || true
    (cd "$dl" && apt-get download -q "$pkg" >&2) || {
        apt-get update -q >&2
        (cd "$dl" && apt-get download -q "$pkg" >&2)
    }
    deb=$(ls "$dl"/*.deb)
    dpkg-deb -x "$deb" "$tmp/root"
    [ -f "$tmp/root/boot/vmlinuz-$release" ] || {
        echo "vm-kernel.sh: $deb has no boot/vmlinuz-$release" >&2
        exit 1
    }
    depmod -b "$tmp/root" "$release"
    mkdir -p "$dir"
    mv "$tmp/root/boot" "$dir/boot"
    mkdir -p "$dir/lib"
    mv "$tmp/root/lib/modules" "$dir/lib/modules"
    touch "$dir/.complete"
fi

printf 'LNST_VM_KERNEL=%s\nLNST_VM_MODULES=%s\n' "$kernel" "$modules" >"$cache/env.tmp"
mv "$cache/env.tmp" "$cache/env"
cat "$cache/env"
