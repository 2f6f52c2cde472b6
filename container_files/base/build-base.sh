#!/bin/sh
# Build the local base image `localhost/lnst-base` (Debian bookworm minbase plus the tools the
# agent drives) with debootstrap and `podman import`. No container registry is needed: packages
# come from the Debian mirror named in the machine's apt sources.
#
# Cached: nothing is done when the image already exists with the same package list (its label
# lnst.base.packages); set LNST_BASE_REBUILD=1 to rebuild anyway.
# Env: LNST_BASE_IMAGE (default localhost/lnst-base), DEBIAN_MIRROR (default: from apt sources),
#      DEBIAN_SUITE (default bookworm).
set -eu

IMAGE=${LNST_BASE_IMAGE:-localhost/lnst-base}
SUITE=${DEBIAN_SUITE:-bookworm}
PACKAGES=iperf3,iproute2,ethtool,iputils-ping,procps,libteam-utils,ca-certificates
# The cache key: a digest of the package list, kept as a label of the image.
PACKAGES_ID=$(printf '%s' "$PACKAGES" | sha256sum | cut -c1-16)

if [ "${LNST_BASE_REBUILD:-0}" != 1 ] && podman image exists "$IMAGE"; then
    have=$(podman image inspect --format '{{ index .Labels "lnst.base.packages" }}' "$IMAGE" 2>/dev/null || true)
    if [ "$have" = "$PACKAGES_ID" ]; then
        echo "build-base: $IMAGE already exists, nothing to do"
        exit 0
    fi
    echo "build-base: $IMAGE was built from another package list: rebuilding"
fi

# The first non-security Debian mirror named in the apt sources (deb822 .sources or one-line
# .list format); deb.debian.org when none is found.
detect_mirror() {
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk 'tolower($1) == "uris:" { for (i = 2; i <= NF; i++) print $i }' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; break } }' "$f"
    done
}
if [ -z "${DEBIAN_MIRROR:-}" ]; then
    DEBIAN_MIRROR=$(detect_mirror | grep -i debian | grep -v -- '-security' | head -n 1 || true)
    DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
fi
echo "build-base: debootstrap $SUITE from $DEBIAN_MIRROR"

command -v debootstrap >/dev/null || { echo "build-base: debootstrap is not installed (run .ci/podman-setup.sh)" >&2; exit 1; }

work=$(mktemp -d /var/tmp/lnst-base.XXXXXX)
cleanup() {
    # debootstrap may leave /proc or /sys mounted in the target on failure.
    for m in proc sys dev/pts dev; do umount "$work/rootfs/$m" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

# iperf3 asks whether to start a daemon; answer it with the default (no) and never prompt.
export DEBIAN_FRONTEND=noninteractive DEBCONF_NONINTERACTIVE_SEEN=true
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$work/rootfs" "$DEBIAN_MIRROR"

# Make sure the preseed is also recorded for later apt runs inside derived images.
echo "iperf3 iperf3/start_daemon boolean false" | chroot "$work/rootfs" debconf-set-selections || true

# Trim caches: they only make the image larger.
rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"* \
       "$work/rootfs/var/log/"*.log "$work/rootfs/tmp/"* 2>/dev/null || true
for m in proc sys dev/pts dev; do umount "$work/rootfs/$m" 2>/dev/null || true; done

tar --numeric-owner -C "$work/rootfs" -c . |
    podman import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["/bin/bash"]' \
        --change "LABEL lnst.base.packages=$PACKAGES_ID" \
        - "$IMAGE"
echo "build-base: built $IMAGE"
