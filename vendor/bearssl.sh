#!/bin/sh
# Obtain, verify and build BearSSL for odcp.  Nothing of BearSSL is committed:
# this script fetches a pinned release, checks every file we compile against
# vendor/bearssl.sha256 and builds libbearssl.a with the caller's compiler.
#
#   vendor/bearssl.sh fetch            unpack and verify into vendor/src/bearssl-$VERSION
#   vendor/bearssl.sh build CC OUTDIR  compile vendor/src/... into OUTDIR/libbearssl.a
#
# Sources, first match wins:
#   1. BEARSSL_SRC=/path/to/bearssl-0.6     an unpacked tree
#   2. vendor/bearssl-0.6*.tar.gz|.tar.xz   an upstream (or Debian orig) tarball put here
#   3. Debian family: `apt-get source bearssl`, after adding a deb-src entry that
#      mirrors the existing deb entry (derived from the system's own sources).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
VERSION=$(cat "$here/bearssl.version")
dest="$here/src/bearssl-$VERSION"

die() { echo "vendor/bearssl.sh: $*" >&2; exit 1; }

verify() {
	(cd "$1" && sha256sum -c --quiet "$here/bearssl.sha256") ||
	    die "$1 does not match vendor/bearssl.sha256 (wrong version or modified tree)"
}

install_tree() {	# $1: a BearSSL tree; copy the parts we build, then verify
	verify "$1"
	rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
	cp -R "$1/src" "$1/inc" "$dest.tmp/"
	[ -f "$1/LICENSE.txt" ] && cp "$1/LICENSE.txt" "$dest.tmp/"
	rm -rf "$dest" && mv "$dest.tmp" "$dest"
}

from_tarball() {
	t=$(mktemp -d)
	tar -xf "$1" -C "$t" || die "cannot unpack $1"
	top=$(find "$t" -mindepth 1 -maxdepth 1 -type d | head -n 1)
	[ -n "$top" ] || die "$1 holds no directory"
	install_tree "$top"
	rm -rf "$t"
}

add_deb_src() {
	# deb822 (*.sources) and one-line (*.list) formats; reuse each deb entry's
	# own URIs, suites and components, only the type changes.
	if ls /etc/apt/sources.list.d/*.sources >/dev/null 2>&1; then
		for f in /etc/apt/sources.list.d/*.sources; do
			case $f in *odcp-deb-src*) continue;; esac
			awk 'BEGIN { RS = ""; ORS = "\n\n" }
			    /(^|\n)Types:[^\n]*deb([ \n]|$)/ && !/deb-src/ {
				sub(/Types:[^\n]*/, "Types: deb-src"); print }' "$f"
		done > /etc/apt/sources.list.d/odcp-deb-src.sources
	fi
	if [ -f /etc/apt/sources.list ] && grep -q '^deb ' /etc/apt/sources.list; then
		sed -n 's/^deb /deb-src /p' /etc/apt/sources.list \
		    > /etc/apt/sources.list.d/odcp-deb-src.list
	fi
	apt-get update -qq
}

from_apt() {
	command -v apt-get >/dev/null || die "no BearSSL source: set BEARSSL_SRC or put bearssl-$VERSION.tar.gz in vendor/"
	t=$(mktemp -d)
	if ! (cd "$t" && apt-get source --download-only bearssl >/dev/null 2>&1); then
		[ "$(id -u)" = 0 ] || die "apt-get source bearssl failed; as root this script adds a deb-src entry, or set BEARSSL_SRC"
		add_deb_src
		(cd "$t" && apt-get source --download-only bearssl >/dev/null 2>&1) ||
		    die "apt-get source bearssl failed even with a deb-src entry"
	fi
	orig=$(ls "$t"/bearssl_"$VERSION"*.orig.tar.* 2>/dev/null | head -n 1)
	[ -n "$orig" ] || die "apt-get source bearssl did not give version $VERSION"
	from_tarball "$orig"
	rm -rf "$t"
}

fetch() {
	if [ -d "$dest" ] && verify "$dest" 2>/dev/null; then return 0; fi
	if [ -n "${BEARSSL_SRC:-}" ]; then
		install_tree "$BEARSSL_SRC"
		return 0
	fi
	for t in "$here"/bearssl-"$VERSION"*.tar.*; do
		[ -f "$t" ] && { from_tarball "$t"; return 0; }
	done
	from_apt
}

build() {	# $1: compiler, $2: output directory
	cc=$1 out=$2
	fetch
	mkdir -p "$out/obj"
	find "$dest/src" -name '*.c' | LC_ALL=C sort > "$out/list"
	# two jobs: the machines we build on have two cores
	xargs -P 2 -n 16 sh -c 'for f; do
		o="$0/obj/$(echo "${f#*/src/}" | tr / _).o"
		'"$cc"' -Os -fPIC -I"'"$dest"'/inc" -I"'"$dest"'/src" -c "$f" -o "$o" || exit 255
	done' "$out" < "$out/list" || die "compiling BearSSL with $cc failed"
	rm -f "$out/libbearssl.a.tmp"
	ar rcs "$out/libbearssl.a.tmp" "$out"/obj/*.o
	mv "$out/libbearssl.a.tmp" "$out/libbearssl.a"
}

case ${1:-} in
fetch)	fetch ;;
build)	[ $# -eq 3 ] || die "usage: bearssl.sh build CC OUTDIR"; build "$2" "$3" ;;
*)	die "usage: bearssl.sh fetch | build CC OUTDIR" ;;
esac
