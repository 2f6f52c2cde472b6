#!/bin/sh
# Build both images without any container registry (run .ci/podman-setup.sh first):
#   1. the local base image localhost/lnst-base (debootstrap, cached),
#   2. static lnst-agent and lnst-runner with cargo on the host, into .prebuilt/,
#   3. `podman build` of container_files/agent/Containerfile → lnst-agent
#      and of Containerfile → lnst_controller, with localhost/lnst-base as builder and base.
# No arguments. Env: LNST_BASE_IMAGE (default localhost/lnst-base).
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

# RUN steps of `podman build` use the engine's OCI runtime: make sure it is runc (crun fails on
# some cgroup layouts) unless the caller chose a containers.conf.
if [ -z "${CONTAINERS_CONF:-}" ]; then
    CONTAINERS_CONF="$root/container_files/containers.conf"
    export CONTAINERS_CONF
fi

base=${LNST_BASE_IMAGE:-localhost/lnst-base}
LNST_BASE_IMAGE=$base "$root/container_files/base/build-base.sh"

target="$(uname -m)-unknown-linux-gnu"
echo "build-images: cargo build (static, $target)"
RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --release --locked --target "$target" --bin lnst-agent --bin lnst-runner
mkdir -p .prebuilt
for b in lnst-agent lnst-runner; do
    cp "target/$target/release/$b" ".prebuilt/$b"
done

# A small build context: the sources and the prebuilt binaries, never target/.
ctx=$(mktemp -d /var/tmp/lnst-ctx.XXXXXX)
trap 'rm -rf "$ctx"' EXIT INT TERM
cp -r Cargo.toml Cargo.lock src .prebuilt "$ctx/"

podman build --build-arg "BUILDER_IMAGE=$base" --build-arg "BASE_IMAGE=$base" \
    -f "$root/container_files/agent/Containerfile" -t lnst-agent "$ctx"
podman build --build-arg "BUILDER_IMAGE=$base" \
    -f "$root/Containerfile" -t lnst_controller "$ctx"
podman image exists localhost/lnst-agent:latest
podman image exists localhost/lnst_controller:latest
echo "build-images: built localhost/lnst-agent and localhost/lnst_controller"
