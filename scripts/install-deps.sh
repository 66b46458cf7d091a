#!/usr/bin/env bash
# Installs the Debian packages isoscope needs, only those missing (idempotent).
set -euo pipefail
PKGS=(
  g++ make cmake pkg-config clang llvm bpftool libbpf-dev libelf-dev zlib1g-dev
  libfmt-dev libspdlog-dev nlohmann-json3-dev libcli11-dev prometheus-cpp-dev
  libgtest-dev libgmock-dev python3 prometheus stress-ng bpftrace wrk iperf3
  qemu-system-x86 cpio busybox-static
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  libcivetweb-dev
  containerd runc containernetworking-plugins skopeo python3-grpcio python3-protobuf runsc
)
# Test-side JavaScript (the OpenTelemetry SDK from npm) needs node and npm. A
# machine may already have them from another source (NodeSource's nodejs
# bundles npm and conflicts with Debian's npm package): commands count.
command -v node >/dev/null 2>&1 || PKGS+=(nodejs)
command -v npm >/dev/null 2>&1 || PKGS+=(npm)
# kubectl renders deploy/ (kustomize); an image may ship another kubectl package (google-cloud-sdk's
# conflicts with Debian's kubernetes-client on /usr/bin/kubectl): the command counts.
command -v kubectl >/dev/null 2>&1 || PKGS+=(kubernetes-client)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
