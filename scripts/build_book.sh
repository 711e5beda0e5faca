#!/usr/bin/env bash
# Build the book strictly: every warning is an error, every notebook is executed (cached).
#
#   scripts/build_book.sh            `jupyter-book build . -W -n --keep-going`; the book's
#                                    Sphinx extension (book/_ext/metabook_assets.py) vendors
#                                    the front-end assets (scripts/vendor_assets.sh: npm,
#                                    skipped when present) and copies them into _build/html
#   scripts/build_book.sh --clean    remove _build/html and _build/jupyter_execute first
#                                    (the execution cache in _build/.jupyter_cache is kept)
#
# The HTML lands in _build/html; tests/test_book_browser.py checks it in headless Chromium.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if [[ "${1:-}" == "--clean" ]]; then
    rm -rf _build/html _build/jupyter_execute
fi

# Notebooks import the working tree's metabook even where it is not pip-installed.
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
# Never let a chapter download anything during a build when the shared data folder is here.
if [[ -z "${METABOOK_DATA:-}" && -d "$root/../shared/data" ]]; then
    export METABOOK_DATA="$(cd "$root/../shared/data" && pwd)"
fi

start=$(date +%s)
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
jupyter-book build . -W -n --keep-going 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

# jupyter-book exits 0 in a few failure modes (for example a notebook that could not be
# executed is reported but the build goes on), so look at the log as well.
if grep -qE "^(WARNING|ERROR)|: (WARNING|ERROR|CRITICAL):|build finished with problems|Execution Failed" "$log"; then
    echo "build_book: warnings or errors in the build log (see above)" >&2
    status=1
fi
if [[ $status -ne 0 ]]; then
    echo "build_book: FAILED after $(( $(date +%s) - start )) s" >&2
    exit "$status"
fi
echo "build_book: OK in $(( $(date +%s) - start )) s -> _build/html"
