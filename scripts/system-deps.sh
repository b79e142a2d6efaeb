#!/usr/bin/env bash
# Installs the Debian packages the test suite needs besides Python packages, when they are
# missing: Chromium and its driver (browser tests of the report, `serve` and the docs site), and
# wamerican, the English word list /usr/share/dict/words (`chainrule lm train --data words`).
# Uses sudo when not run as root; does nothing when everything is there.
set -euo pipefail

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium chromium-driver)
[ -f /usr/share/dict/words ] || need+=(wamerican)
[ ${#need[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "system-deps: installing ${need[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
