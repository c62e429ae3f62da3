#!/usr/bin/env bash
# Installs a pinned, checksummed ONNX Runtime shared library at lib/libonnxruntime.so.
# The library comes from the npm registry package onnxruntime-node, fetched with `npm pack`
# (its install script, which downloads from elsewhere, is never run).
set -euo pipefail

ORT_VERSION=1.24.3
TGZ_SHA256=aa1bb5fa261ea68de05dd53efbba210cd7adf2d2850f4c3a201054c74cc78040
LIB_SHA256=92ba8e44d31b80a34f5e805076a044122c3be1fffe0d88ed790de7267b0b2682

root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/lib/libonnxruntime.so"

if [ -f "$dest" ] && echo "$LIB_SHA256  $dest" | sha256sum --check --status; then
	echo "ONNX Runtime $ORT_VERSION already at lib/libonnxruntime.so"
	exit 0
fi
case "$(uname -s)/$(uname -m)" in
Linux/x86_64) arch=x64 ;;
Linux/aarch64) echo "fetch-ort: linux/arm64 has no pinned checksum yet; set STATICREF_ORT_LIB" >&2; exit 1 ;;
*) echo "fetch-ort: unsupported platform $(uname -s)/$(uname -m); set STATICREF_ORT_LIB" >&2; exit 1 ;;
esac
command -v npm >/dev/null || { echo "fetch-ort: npm is needed (apt-get install -y npm)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent --ignore-scripts "onnxruntime-node@$ORT_VERSION" >/dev/null)
tgz="$work/onnxruntime-node-$ORT_VERSION.tgz"
echo "$TGZ_SHA256  $tgz" | sha256sum --check --status || {
	echo "fetch-ort: checksum mismatch for $(basename "$tgz"); refusing to install" >&2
	exit 1
}
tar -xzf "$tgz" -C "$work" "package/bin/napi-v6/linux/$arch/libonnxruntime.so.1"
lib="$work/package/bin/napi-v6/linux/$arch/libonnxruntime.so.1"
echo "$LIB_SHA256  $lib" | sha256sum --check --status || {
	echo "fetch-ort: checksum mismatch for libonnxruntime.so.1; refusing to install" >&2
	exit 1
}
mkdir -p "$root/lib"
install -m 0644 "$lib" "$dest.tmp"
mv "$dest.tmp" "$dest"
echo "ONNX Runtime $ORT_VERSION installed at lib/libonnxruntime.so"
