#!/usr/bin/env bash
# Installs the Debian packages MuJoCo needs to render offscreen (Mesa EGL), only if one is missing.
# Never fatal: Push-T does not need them, and Push Cube fails later with a one-line error naming the package.
set -uo pipefail
GL_PKGS="libegl1 libopengl0 libegl-mesa0 libgl1-mesa-dri"
if command -v apt-get >/dev/null 2>&1 && command -v dpkg-query >/dev/null 2>&1; then
    missing=$(for p in $GL_PKGS; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || echo "$p"; done)
    if [ -n "$missing" ]; then
        SUDO=$([ "$(id -u)" -eq 0 ] || echo sudo)
        { $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing; } \
            || echo "warning: could not install $missing (Push Cube rendering needs them)" >&2
    fi
fi
