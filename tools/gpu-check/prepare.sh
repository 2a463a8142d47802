#!/bin/sh
# Run on a Debian 12 machine WITH apt (this one, not the GPU machine): puts into DIR what
# tools/gpu-check/run.sh needs and the GPU machine lacks -- the Debian .debs of GLib, json-glib,
# libpng and pkgconf (plus the -dev packages their .pc files require), and GoogleTest's sources
# from Debian's /usr/src/googletest. Then carry DIR to the GPU machine and run
#   tools/gpu-check/run.sh --debs DIR --shared SHARED
# About 10 MB. Needs: apt-get (download only, no root), the googletest package installed.
set -eu
dir=${1:?usage: tools/gpu-check/prepare.sh DIR}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
pkgs="libglib2.0-0 libglib2.0-dev libjson-glib-1.0-0 libjson-glib-dev libpng16-16 libpng-dev
  zlib1g zlib1g-dev libffi8 libffi-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3 libpcre2-dev
  libmount1 libmount-dev libblkid1 libblkid-dev libselinux1 libselinux1-dev libsepol2 libsepol-dev
  pkgconf pkgconf-bin libpkgconf3"
(cd "$dir" && apt-get download $pkgs)
if [ ! -f /usr/src/googletest/googletest/src/gtest-all.cc ]; then
  echo "prepare.sh: /usr/src/googletest missing (apt-get install googletest)" >&2
  exit 1
fi
rm -rf "$dir/googletest"
mkdir -p "$dir/googletest"
cp -r /usr/src/googletest/googletest/include /usr/src/googletest/googletest/src "$dir/googletest/"
echo "prepare.sh: $(ls "$dir"/*.deb | wc -l) .debs and googletest sources in $dir ($(du -sh "$dir" | cut -f1))"
