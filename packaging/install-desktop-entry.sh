#!/usr/bin/env bash
# Add KF Studio to the desktop's application menu (Linux, freedesktop.org menus).
# Run after `pip install kfstudio` (or `make install`) so that `kfstudio` is on PATH.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
apps="${XDG_DATA_HOME:-$HOME/.local/share}/applications"
icons="${XDG_DATA_HOME:-$HOME/.local/share}/icons/hicolor/scalable/apps"
mkdir -p "$apps" "$icons"
install -m 644 "$here/kfstudio.desktop" "$apps/kfstudio.desktop"
install -m 644 "$here/../resources/icons/kfstudio.svg" "$icons/kfstudio.svg"
command -v update-desktop-database >/dev/null && update-desktop-database "$apps" || true
echo "KF Studio is in the application menu ($apps/kfstudio.desktop)."
