#!/usr/bin/env bash
# `make report-check`: opens each report (default: every report/*/report.html that `make run`
# wrote) in headless Chromium and fails when a page logs a console error, a figure does not
# load, or its full-page screenshot is blank (scripts/report/check_report.py). Installs Debian's
# chromium and a small venv (websocket-client for the DevTools protocol, Pillow for the
# screenshot) on first use. Screenshots: report/screenshots/<study>.png.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

if ! command -v chromium >/dev/null; then
  echo "report-check: installing chromium"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get -o DPkg::Lock::Timeout=600 update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -q chromium
fi

. scripts/lib/venv.sh
venv="$root/.venv-browser"
pinned_venv "$venv" "websocket-client==1.9.2 pillow==13.0.0" "the report check"

if (($#)); then
  pages=("$@")
else
  shopt -s nullglob
  pages=(report/*/report.html)
fi
if ((${#pages[@]} == 0)); then
  echo "report-check: no report to check (make run writes report/<study>/report.html)" >&2
  exit 2
fi
exec "$venv/bin/python" scripts/report/check_report.py report/screenshots "${pages[@]}"
