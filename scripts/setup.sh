#!/usr/bin/env bash
# Installs everything sdonnx needs to build and test on Debian 12:
# Debian packages through apt-get, and ONNX Runtime 1.29 (headers and the
# shared library) from the npm package com.github.asus4.onnxruntime@0.4.9,
# unpacked into third_party/onnxruntime after its checksum is checked.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

apt_packages=(
  build-essential cmake pkg-config binutils
  libprotobuf-dev protobuf-compiler libonnx-dev
  nlohmann-json3-dev libyaml-cpp-dev libcli11-dev
  libspng-dev libssl-dev libxxhash-dev zlib1g-dev libicu-dev
  libgtest-dev libgmock-dev libbenchmark-dev
)

missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

ort_package="com.github.asus4.onnxruntime"
ort_version="0.4.9"
# sha512 integrity of the npm tarball, as the registry publishes it.
ort_integrity="sha512-BkzxduSZ9IkeDP6Q8lz2TFU2ie7hSSvS7ZIfzMooExoq0CNzJnuuGaUJ7IsojBgqO4ouD1jXah8OYyJbCN29Fg=="
ort_dir="$repo_root/third_party/onnxruntime"

# SDONNX_SKIP_ORT=1: an ONNX Runtime install is given with -DONNXRUNTIME_ROOT.
if [[ "${SDONNX_SKIP_ORT:-0}" == 1 || -f "$ort_dir/.installed-$ort_version" ]]; then
  exit 0
fi

command -v npm >/dev/null || {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm
}

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "setup: fetching $ort_package@$ort_version from npm"
(cd "$work" && npm pack --silent "$ort_package@$ort_version" >/dev/null)
tarball="$(ls "$work"/*.tgz)"
actual="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
if [[ "$actual" != "$ort_integrity" ]]; then
  echo "setup: checksum mismatch for $tarball" >&2
  echo "  expected $ort_integrity" >&2
  echo "  got      $actual" >&2
  exit 1
fi
tar -xzf "$tarball" -C "$work"

# The package ships the Linux x64 libraries under Plugins/Linux/x64 and the
# C and C++ API headers only inside its iOS framework; the headers are
# platform-independent, so they serve the Linux build too.
headers="$work/package/Plugins/iOS~/onnxruntime.xcframework/ios-arm64/onnxruntime.framework/Headers"
libs="$work/package/Plugins/Linux/x64"
[[ -f "$headers/onnxruntime_cxx_api.h" && -f "$libs/libonnxruntime.so" ]] || {
  echo "setup: $ort_package@$ort_version does not have the expected layout" >&2
  exit 1
}
rm -rf "$ort_dir"
mkdir -p "$ort_dir/include" "$ort_dir/lib"
cp "$headers"/*.h "$ort_dir/include/"
cp "$libs"/*.so "$ort_dir/lib/"
# The library's SONAME is libonnxruntime.so.1; the loader looks for that name.
soname="$(objdump -p "$ort_dir/lib/libonnxruntime.so" | awk '/SONAME/ {print $2}')"
if [[ -n "$soname" && "$soname" != "libonnxruntime.so" ]]; then
  ln -sf libonnxruntime.so "$ort_dir/lib/$soname"
fi
cp "$work/package/LICENSE" "$ort_dir/LICENSE"
touch "$ort_dir/.installed-$ort_version"
echo "setup: ONNX Runtime installed in $ort_dir"
