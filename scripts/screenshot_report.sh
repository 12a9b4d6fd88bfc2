#!/usr/bin/env bash
# Screenshot a run's report.html the way a laptop shows it (1366x768, headless Chromium) and check that
# the page needs no horizontal scrolling. A dev tool for docs/quickstart-report.png, not a test dependency.
#
#   scripts/screenshot_report.sh RUN_DIR [OUT_PNG]     (default OUT_PNG: docs/quickstart-report.png)
#
# Needs chromium (Debian: apt-get install -y chromium). Regenerate the picture after a quickstart run:
#   edgekd run pipelines/quickstart.yaml --run-dir /tmp/qs && scripts/screenshot_report.sh /tmp/qs
set -euo pipefail

run_dir=${1:?usage: $0 RUN_DIR [OUT_PNG]}
out=${2:-docs/quickstart-report.png}
width=1366
height=768
page="$run_dir/report/report.html"
[ -f "$page" ] || { echo "$page: no report; run the pipeline first" >&2; exit 2; }
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
[ -n "$browser" ] || { echo "chromium not found (apt-get install -y chromium)" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
flags=(--headless --no-sandbox --disable-gpu --hide-scrollbars --force-device-scale-factor=1
       --window-size="$width,$height" --user-data-dir="$work/profile")

# The page's own width at this window size: a copy with one script that writes it into the DOM.
sed 's|</body>|<script>document.body.setAttribute("data-width", document.documentElement.scrollWidth)</script></body>|' \
    "$page" > "$work/measure.html"
measured=$("$browser" "${flags[@]}" --dump-dom "file://$(realpath "$work/measure.html")" 2>/dev/null \
           | grep -o 'data-width="[0-9]*"' | grep -o '[0-9]*' || true)
"$browser" "${flags[@]}" --screenshot="$(realpath -m "$out")" "file://$(realpath "$page")" 2>/dev/null
echo "$out: ${width}x${height} screenshot of $page; page width ${measured:-unknown} px"
if [ -n "$measured" ] && [ "$measured" -gt "$width" ]; then
    echo "the report is wider than the window: it scrolls horizontally" >&2
    exit 1
fi
