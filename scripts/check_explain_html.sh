#!/usr/bin/env bash
# Open `gradgen explain --format html` pages in headless Chromium (Debian: apt-get install chromium) with
# networking off, and save a screenshot of each: the pages must render their formulas and graph with
# nothing fetched.  Usage: scripts/check_explain_html.sh [SPEC...]   (default: specs/mlp.yaml specs/attention.yaml)
# Output: explain-html/<name>.html, explain-html/<name>.png, and Chromium's console log; exits non-zero
# when Chromium reports a console error or a blocked request.
set -euo pipefail
cd "$(dirname "$0")/.."
out=explain-html
mkdir -p "$out"
specs=("$@")
[ ${#specs[@]} -gt 0 ] || specs=(specs/mlp.yaml specs/attention.yaml)
browser=$(command -v chromium || command -v chromium-browser || true)
[ -n "$browser" ] || { echo "chromium is not installed (apt-get install chromium)" >&2; exit 2; }
status=0
for spec in "${specs[@]}"; do
  name=$(basename "${spec%.*}")
  gradgen explain "$spec" --format html --out "$out/$name.html" --dims N=256,D=784,H=128,C=10,B=8,T=64,K=32 \
    >/dev/null 2>&1 || gradgen explain "$spec" --format html --out "$out/$name.html"
  profile=$(mktemp -d)
  "$browser" --headless --no-sandbox --disable-gpu --disable-background-networking --no-first-run \
    --disable-component-update --disable-sync --user-data-dir="$profile" --enable-logging=stderr --v=0 \
    --window-size=1200,1600 --screenshot="$out/$name.png" "file://$PWD/$out/$name.html" \
    2>"$out/$name.console.log" >/dev/null || status=1
  rm -rf "$profile"
  if grep -E "CONSOLE|Refused to|ERR_" "$out/$name.console.log" | grep -v "^$" >/dev/null; then
    echo "$spec: console messages:" >&2
    grep -E "CONSOLE|Refused to|ERR_" "$out/$name.console.log" >&2
    status=1
  fi
  echo "$spec -> $out/$name.html, $out/$name.png"
done
exit $status
