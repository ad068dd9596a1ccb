#!/bin/sh
# Debian's Chromium for the dashboard's browser tests (tests/integration/test_dashboard.py).
# A no-op when a Chromium is already there; otherwise installs the `chromium` package with
# apt-get (as root, or through password-less sudo). Playwright drives this browser: it never
# downloads one of its own. Other systems: install Chromium and set TOUCHFLOW_CHROMIUM.
set -eu

for browser in "${TOUCHFLOW_CHROMIUM:-}" chromium chromium-browser; do
    if [ -n "$browser" ] && command -v "$browser" >/dev/null 2>&1; then
        exit 0
    fi
done

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-chromium: no chromium and no apt-get: install Chromium and set TOUCHFLOW_CHROMIUM" >&2
    exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
    as_root=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root="sudo -n"
else
    echo "ensure-chromium: installing chromium needs root: sudo apt-get install -y chromium" >&2
    exit 1
fi

echo "ensure-chromium: installing Debian's chromium (about 150 MB, once)"
export DEBIAN_FRONTEND=noninteractive
$as_root apt-get update -qq
$as_root apt-get install -y -qq chromium >/dev/null
command -v chromium
