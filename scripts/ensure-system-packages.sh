#!/usr/bin/env bash
# Installs the Debian packages the tests start for real (redis-server, tesseract for OCR,
# chromium for the web page test) when they are missing. Needs root and apt; otherwise it
# says what is missing and the tests that need it report it.
set -euo pipefail
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v tesseract >/dev/null 2>&1 || need+=(tesseract-ocr tesseract-ocr-eng tesseract-ocr-chi-sim)
[ -e /usr/share/tesseract-ocr/5/tessdata/chi_sim.traineddata ] || [ -e /usr/share/tesseract-ocr/4.00/tessdata/chi_sim.traineddata ] || need+=(tesseract-ocr-chi-sim)
[ -e /usr/share/fonts/truetype/wqy/wqy-zenhei.ttc ] || need+=(fonts-wqy-zenhei)  # CJK font: OCR tests render Chinese
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "missing system packages (install them to run every test): ${need[*]}" >&2
  exit 0
fi
echo "installing system packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
