#!/usr/bin/env bash
# Refreshes docs/assets/katex, the copy of KaTeX the course site renders its math with, from the
# npm package katex@VERSION (default below): katex.min.js, katex.min.css, every font the CSS
# names, the auto-render extension (for the search results) and the MIT license. The site then loads nothing from another host; the docs build
# and its tests never run this script (the files are committed).
#   bash scripts/vendor-katex.sh [VERSION]
set -euo pipefail
version="${1:-0.19.1}"
cd "$(dirname "$0")/.."
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "katex@$version" >/dev/null && tar xzf "katex-$version.tgz")
dest=docs/assets/katex
rm -rf "$dest"
mkdir -p "$dest/fonts"
cp "$tmp/package/dist/katex.min.js" "$tmp/package/dist/katex.min.css" \
   "$tmp/package/dist/contrib/auto-render.min.js" "$dest/"
cp "$tmp/package/dist/fonts/"* "$dest/fonts/"
cp "$tmp/package/LICENSE" "$dest/LICENSE"
echo "$version" > "$dest/VERSION"
echo "vendor-katex: docs/assets/katex now holds KaTeX $version" >&2
