#!/usr/bin/env bash
# Vendor the book's front-end scripts so that the built HTML renders offline.
#
#   MathJax 3 (mathjax@3.2.2, es5 build)           -> _build/vendor/_vendor/mathjax/
#   Jupyter widgets HTML manager (embed.js + fonts) -> _build/vendor/_vendor/jupyter-widgets/
#
# Versions are pinned in scripts/package.json and scripts/package-lock.json and installed with
# `npm ci` into scripts/node_modules (not committed). `_config.yml` lists `_build/vendor` in
# `html_extra_path`, so Sphinx copies it to `_build/html/_vendor/` and every page loads MathJax and
# the widget manager from there. The files are deliberately kept out of `_static/`: Jupyter Book
# injects every script in `_static/` into every page.
#
# Every `jupyter-book build` runs this script: the Sphinx extension book/_ext/metabook_assets.py
# calls it when the build starts and, when the build ends, copies `_vendor/` into the HTML output
# if it is missing or stale there, so there is no need to run it by hand.
#
# Usage: scripts/vendor_assets.sh [--force]   (skips npm when the assets are already in place)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
scripts="$root/scripts"
dest="$root/_build/vendor/_vendor"
stamp="$dest/.stamp"
# Re-vendor when the pinned versions or this script change.
want="$(cat "$scripts/package-lock.json" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)"

if [[ "${1:-}" != "--force" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "vendor_assets: up to date ($dest)"
    exit 0
fi

nm="$scripts/node_modules"
if [[ ! -f "$nm/mathjax/es5/tex-chtml.js" || ! -f "$nm/@jupyter-widgets/html-manager/dist/embed.js" \
      || "${1:-}" == "--force" ]]; then
    command -v npm >/dev/null || { echo "vendor_assets: npm not found (apt-get install -y nodejs npm)" >&2; exit 1; }
    echo "vendor_assets: npm ci in $scripts"
    # --ignore-scripts: nothing we use needs an install script (fontawesome's only prints a notice).
    (cd "$scripts" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
fi

rm -rf "$dest"
mkdir -p "$dest/mathjax" "$dest/jupyter-widgets"

# MathJax: the whole es5 build (components load extensions and fonts relative to themselves).
cp -r "$nm/mathjax/es5/." "$dest/mathjax/"
cp "$nm/mathjax/LICENSE" "$dest/mathjax/LICENSE"

# Widgets: embed.js is the self-contained (no RequireJS) bundle of @jupyter-widgets/base and
# controls; its CSS loads the Font Awesome files that webpack emitted beside it.
hm="$nm/@jupyter-widgets/html-manager"
cp "$hm/dist/embed.js" "$hm/dist/embed.js.LICENSE.txt" "$dest/jupyter-widgets/"
find "$hm/dist" -maxdepth 1 -type f \( -name '*.woff' -o -name '*.woff2' -o -name '*.ttf' \
     -o -name '*.eot' -o -name '*.svg' \) -exec cp {} "$dest/jupyter-widgets/" \;

# @jupyter-widgets/controls typesets widget labels with the MathJax 2 API
# (`MathJax.Hub.Queue`), which MathJax 3 does not have: every widget with a description would
# throw a TypeError. This shim, loaded just before embed.js, maps that call onto MathJax 3.
cat > "$dest/jupyter-widgets/mathjax3-shim.js" <<'JS'
/* metabook: let @jupyter-widgets/controls (MathJax 2 API) typeset with MathJax 3. */
(function () {
  // Widget labels write inline math as $...$ (as in Jupyter); the book's MathJax 3 only
  // knows \(...\), so plain-text labels are rewritten before they are typeset.
  function delimit(el) {
    if (!el || el.children.length || el.textContent.indexOf("$") < 0) return;
    el.textContent = el.textContent
      .replace(/\$\$([^$]+)\$\$/g, "\\[$1\\]")
      .replace(/\$([^$]+)\$/g, "\\($1\\)");
  }
  function install() {
    var MJ = window.MathJax;
    if (!MJ || MJ.Hub) return;
    MJ.Hub = {
      Queue: function (cmd) {
        var el = Array.isArray(cmd) ? cmd[2] : undefined;
        var ready = (MJ.startup && MJ.startup.promise) || Promise.resolve();
        ready.then(function () {
          if (!MJ.typesetPromise) return;
          delimit(el);
          return MJ.typesetPromise(el ? [el] : undefined);
        }).catch(function (e) { console.warn("MathJax typeset of a widget failed", e); });
      }
    };
  }
  install();  // MathJax 3 may already be loaded ...
  document.addEventListener("DOMContentLoaded", install);  // ... or load (deferred) later;
  window.addEventListener("load", install);  // runs before embed.js renders on "load".
})();
JS

echo "$want" > "$stamp"
# No need to invalidate the HTML build: the metabook_assets extension compares this stamp with
# the one in _build/html/_vendor/ at the end of every build and copies the new files over.
echo "vendor_assets: installed into $dest ($(du -sh "$dest" | cut -f1))"
