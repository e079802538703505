#!/usr/bin/env bash
# Make the Fashion-MNIST IDX files available, without network except the
# package registries. Order of preference:
#   1. $ADVSPATIAL_DATA/fashion-mnist already holds the four IDX files;
#   2. /usr/share/datasets/fashion-mnist (Debian package dataset-fashion-mnist);
#   3. the advspatial cache dir (${ADVSPATIAL_CACHE:-~/.cache/advspatial}/data/fashion-mnist);
# otherwise install it: as root (or with password-less sudo) through apt-get;
# as any other user, fetch the .deb with apt into a private directory and
# unpack it into the cache dir (no root needed).
set -uo pipefail
files=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)
cache=${ADVSPATIAL_CACHE:-$HOME/.cache/advspatial}
system_dir=/usr/share/datasets/fashion-mnist
cache_dir=$cache/data/fashion-mnist

has_all() {
    local d=$1
    for f in "${files[@]}"; do [ -s "$d/$f" ] || return 1; done
    return 0
}

if [ -n "${ADVSPATIAL_DATA:-}" ] && has_all "$ADVSPATIAL_DATA/fashion-mnist"; then exit 0; fi
if has_all "$system_dir" || has_all "$cache_dir"; then exit 0; fi

echo "advspatial: Fashion-MNIST not found; installing the Debian package dataset-fashion-mnist" >&2
if [ "$(id -u)" = 0 ]; then
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || true
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo -n apt-get update -qq >/dev/null 2>&1 || true
    sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || true
fi
if has_all "$system_dir"; then exit 0; fi

# No root: download the package with private apt state and unpack it.
if command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1; then
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    mkdir -p "$work/lists/partial" "$work/archives/partial"
    apt_opts=(-o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work" -o "Dir::Cache::archives=$work/archives" -o Debug::NoLocking=1)
    if apt-get "${apt_opts[@]}" -qq update >/dev/null 2>&1 \
        && (cd "$work" && apt-get "${apt_opts[@]}" -qq download dataset-fashion-mnist >/dev/null 2>&1); then
        deb=$(ls "$work"/dataset-fashion-mnist_*.deb 2>/dev/null | head -n 1)
        if [ -n "$deb" ]; then
            dpkg-deb -x "$deb" "$work/root"
            mkdir -p "$cache_dir"
            cp "$work/root/usr/share/datasets/fashion-mnist/"*.gz "$cache_dir/"
        fi
    fi
fi
if has_all "$cache_dir"; then exit 0; fi

cat >&2 <<MSG
advspatial: could not make Fashion-MNIST available. Any one of these works:
  * as root: apt-get update && apt-get install dataset-fashion-mnist   (files land in $system_dir)
  * copy the four IDX files (${files[*]}) into \$ADVSPATIAL_DATA/fashion-mnist
  * or into the cache dir $cache_dir
MSG
exit 1
