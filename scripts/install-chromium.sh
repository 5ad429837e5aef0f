#!/usr/bin/env bash
# Installs Debian's chromium for the dashboard's browser test
# (cmd/orderd/dashboard_browser_test.go), which also does this itself when run as root.
# Safe to run again: does nothing when a Chromium is already on PATH.
set -euo pipefail

for name in chromium chromium-browser google-chrome google-chrome-stable; do
	if command -v "$name" >/dev/null 2>&1; then
		echo "chromium: $(command -v "$name") ($("$name" --version 2>/dev/null || echo 'version unknown'))"
		exit 0
	fi
done
if [[ $(id -u) -ne 0 ]]; then
	echo "chromium is not installed; run this script as root (it uses apt-get)" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium
echo "chromium: $(command -v chromium) ($(chromium --version))"
