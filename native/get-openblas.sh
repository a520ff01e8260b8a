#!/bin/sh
# The fast CPU path's one system dependency: OpenBLAS with its headers (Debian/Ubuntu: libopenblas-dev), which
# `npm ci` then links the GEMM kernels against. Installs it where it is missing and this user can (root, or
# sudo); says what to do otherwise. Always exits 0: kd-launch runs without it, a CNN about 11× slower.
if dpkg -s libopenblas-dev >/dev/null 2>&1; then
  echo "get-openblas: libopenblas-dev is installed"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "get-openblas: no apt-get here; install OpenBLAS and its cblas.h with your package manager for the fast CPU path"
  exit 0
fi
if [ "$(id -u)" = 0 ]; then
  sudo=
elif command -v sudo >/dev/null 2>&1; then
  sudo=sudo
else
  echo "get-openblas: run 'apt-get install libopenblas-dev' as root for the fast CPU path (not root here, and no sudo)"
  exit 0
fi
echo "get-openblas: installing libopenblas-dev (the fast CPU path)"
if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq libopenblas-dev >/dev/null; }; then
  echo "get-openblas: could not install libopenblas-dev; kd-launch will run without the fast CPU path"
fi
exit 0
