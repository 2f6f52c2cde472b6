#!/bin/sh
# Prepare a fresh Debian machine for lnst-runner's Podman tests: install Podman and the tools
# the images need, write the project's containers.conf and start the Podman API service on
# unix:///run/podman/podman.sock. Idempotent: re-running it with the service already up is fine.
#
# Run it (do not source it: it uses `set -eu` and `exit`), then export in the caller:
#   CONTAINERS_CONF=/etc/lnst-runner/containers.conf PODMAN_URI=unix:///run/podman/podman.sock
# (under GitHub Actions it appends both to $GITHUB_ENV itself).
set -eu

_lnst_root=$(cd "$(dirname "$0")/.." 2>/dev/null && pwd || pwd)
[ -f "$_lnst_root/container_files/containers.conf" ] || _lnst_root=$(pwd)
_lnst_sock=/run/podman/podman.sock
_lnst_conf=/etc/lnst-runner/containers.conf
_lnst_log=/var/log/lnst-podman-service.log

if [ "$(id -u)" != 0 ]; then
    echo "podman-setup: must run as root (rootful Podman API)" >&2
    exit 1
fi

_lnst_need=""
for _p in podman:podman runc:runc debootstrap:debootstrap iperf3:iperf3 curl:curl ip:iproute2; do
    command -v "${_p%%:*}" >/dev/null 2>&1 || _lnst_need="$_lnst_need ${_p#*:}"
done
# Packages without a single binary to probe.
# netavark runs iptables to set up container networks; --no-install-recommends would
# skip them.
for _p in uidmap ca-certificates libc6-dev netavark iptables; do
    dpkg -s "$_p" >/dev/null 2>&1 || _lnst_need="$_lnst_need $_p"
done
if [ -n "$_lnst_need" ]; then
    echo "podman-setup: installing$_lnst_need"
    export DEBIAN_FRONTEND=noninteractive
    echo "iperf3 iperf3/start_daemon boolean false" | debconf-set-selections 2>/dev/null || true
    apt-get update -q
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $_lnst_need
fi

mkdir -p "$(dirname "$_lnst_conf")" /run/podman
install -m 0644 "$_lnst_root/container_files/containers.conf" "$_lnst_conf"
export CONTAINERS_CONF="$_lnst_conf"
export PODMAN_URI="unix://$_lnst_sock"

_lnst_ping() {
    curl -fsS --max-time 2 --unix-socket "$_lnst_sock" http://d/_ping >/dev/null 2>&1
}

# A service left by an earlier checkout whose directory is gone answers /_ping but cannot start
# a container: conmon inherits the deleted working directory and dies, and every attach fails
# with 409 "preparing container ... for attach: write child: broken pipe". Stop it.
_lnst_stale=
for _p in $(pgrep -f "podman system service .*unix://$_lnst_sock" || true); do
    case "$(readlink "/proc/$_p/cwd" 2>/dev/null)" in
    *" (deleted)")
        echo "podman-setup: stopping the Podman service $_p (its working directory was deleted)"
        kill "$_p" 2>/dev/null || true
        _lnst_stale=1
        ;;
    esac
done
[ -z "$_lnst_stale" ] || sleep 1
if _lnst_ping; then
    echo "podman-setup: API already answers on $PODMAN_URI"
else
    rm -f "$_lnst_sock"
    echo "podman-setup: starting podman system service on $PODMAN_URI (log $_lnst_log)"
    # setsid: the service must outlive this script and the CI step's process group.
    # cd /: the service (and every conmon it starts) must not keep this checkout as its working
    # directory, which CI deletes after the run.
    CONTAINERS_CONF="$_lnst_conf" setsid env -C / podman system service --time=0 "unix://$_lnst_sock" \
        >>"$_lnst_log" 2>&1 </dev/null &
    _i=0
    until _lnst_ping; do
        _i=$((_i + 1))
        if [ "$_i" -ge 100 ]; then
            echo "podman-setup: the API did not answer /_ping within 20 s; see $_lnst_log" >&2
            tail -n 20 "$_lnst_log" >&2 || true
            exit 1
        fi
        sleep 0.2
    done
    echo "podman-setup: API is up"
fi

if [ -n "${GITHUB_ENV:-}" ]; then
    {
        echo "CONTAINERS_CONF=$CONTAINERS_CONF"
        echo "PODMAN_URI=$PODMAN_URI"
    } >>"$GITHUB_ENV"
fi
