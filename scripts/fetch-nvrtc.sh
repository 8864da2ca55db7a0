#!/usr/bin/env bash
# Fetches a real NVRTC (with ptxas inside) for a machine without a GPU or a CUDA toolkit, so the kernels of
# kernels/ can be compiled to CUBIN in tests and CI. Source: Debian trixie's non-free packages libnvrtc12 and
# libnvrtc-builtins12.4, downloaded by package name with `apt-get download` through a PRIVATE apt
# configuration (own sources list, lists, cache and status file under the cache folder): the system's apt
# state and sources are never read or written. The .debs are unpacked with `dpkg-deb -x` (nothing is installed).
#
# Usage: scripts/fetch-nvrtc.sh [cache-dir]     (default: <repo>/.cache/nvrtc, ignored by git)
# Prints the full path of libnvrtc.so.12 on stdout (progress goes to stderr). Idempotent: when the library is
# already unpacked it prints the path at once. Exit status non-zero (with the reason on stderr) when the
# packages cannot be fetched; callers then skip the NVRTC checks with that reason.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cache="${1:-$repo/.cache/nvrtc}"
mkdir -p "$cache"
cache="$(cd "$cache" && pwd)"
root="$cache/root"

find_lib() { find "$root" -name 'libnvrtc.so.12' \( -type f -o -type l \) 2>/dev/null | head -n1; }
find_builtins() { find "$root" -name 'libnvrtc-builtins.so.12*' \( -type f -o -type l \) 2>/dev/null | head -n1; }

if [ -n "$(find_lib)" ] && [ -n "$(find_builtins)" ]; then
  find_lib
  exit 0
fi

for tool in apt-get dpkg-deb; do
  command -v "$tool" >/dev/null || { echo "fetch-nvrtc: $tool not found (needs a Debian/Ubuntu host)" >&2; exit 1; }
done

apt_dir="$cache/apt"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/debs" "$apt_dir/etc/preferences.d"
: > "$apt_dir/status"
# The Release file's signature is checked against the host's Debian archive keyring (bookworm's
# debian-archive-keyring already carries the trixie keys); the packages against the Release file's hashes.
cat > "$apt_dir/sources.list" <<'EOF'
deb http://deb.debian.org/debian trixie main contrib non-free
EOF
apt_opts=(
  -o "Dir::Etc::SourceList=$apt_dir/sources.list"
  -o "Dir::Etc::SourceParts=/dev/null"
  -o "Dir::Etc::Preferences=/dev/null"
  -o "Dir::Etc::PreferencesParts=$apt_dir/etc/preferences.d"
  -o "Dir::State=$apt_dir"
  -o "Dir::State::Lists=$apt_dir/lists"
  -o "Dir::State::status=$apt_dir/status"
  -o "Dir::Cache=$apt_dir/cache"
  -o "Debug::NoLocking=1"
  -o "APT::Sandbox::User=root"
  -o "APT::Architecture=amd64"
  -o "Acquire::Languages=none"
  -o "Acquire::http::Timeout=30"
  -o "Acquire::Retries=1"
  -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
  -o "Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false"
)
echo "fetch-nvrtc: updating private package lists (trixie main contrib non-free) in $apt_dir" >&2
apt-get "${apt_opts[@]}" -qq update >&2 || { echo "fetch-nvrtc: apt-get update failed (no access to deb.debian.org?)" >&2; exit 1; }
echo "fetch-nvrtc: downloading libnvrtc12 libnvrtc-builtins12.4" >&2
(cd "$apt_dir/debs" && apt-get "${apt_opts[@]}" -qq download libnvrtc12 libnvrtc-builtins12.4 >&2) \
  || { echo "fetch-nvrtc: apt-get download libnvrtc12 libnvrtc-builtins12.4 failed" >&2; exit 1; }
mkdir -p "$root"
for deb in "$apt_dir"/debs/*.deb; do dpkg-deb -x "$deb" "$root"; done
# The lists and .debs are only needed for the download; the cache keeps just the unpacked libraries.
rm -rf "$apt_dir/lists" "$apt_dir/cache" "$apt_dir/debs"
lib="$(find_lib)"
[ -n "$lib" ] && [ -n "$(find_builtins)" ] || { echo "fetch-nvrtc: the packages did not contain libnvrtc.so.12 and libnvrtc-builtins.so.12.*" >&2; exit 1; }
echo "$lib"
