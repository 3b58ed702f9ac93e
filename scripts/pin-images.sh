#!/usr/bin/env bash
# Pins every image of images.lock to the digest its tag has now, and writes that reference into
# images.lock, docker-compose.yaml and the Dockerfile. Run it on the operator's machine (it needs
# Docker with buildx and the registry), review the diff, commit it. With --check it only verifies
# that the three files agree and that no digest is UNRESOLVED.
set -euo pipefail
cd "${TFP_STACK_DIR:-$(dirname "$0")/..}"
files=(images.lock docker-compose.yaml Dockerfile)
status=0
mapfile -t refs < <(grep -Ev '^\s*(#|$)' images.lock)
for ref in "${refs[@]}"; do
    image=${ref%@*}
    if [ "${1:-}" = --check ]; then
        [[ $ref =~ @sha256:[0-9a-f]{64}$ ]] || { echo "unpinned: $ref"; status=1; }
        for f in docker-compose.yaml Dockerfile; do
            grep -q "${image}@" "$f" && ! grep -qF "$ref" "$f" && { echo "$f disagrees with images.lock on $image"; status=1; }
        done
        continue
    fi
    # the first Digest: line is the tag's index (multi-platform) digest
    digest=$(docker buildx imagetools inspect "$image" | awk '$1 == "Digest:" {print $2; exit}')
    [[ $digest =~ ^sha256:[0-9a-f]{64}$ ]] || { echo "no digest for $image: $digest" >&2; exit 1; }
    sed -i "s|${image//./\\.}@sha256:[0-9A-Za-z]*|${image}@${digest}|g" "${files[@]}"
    echo "$image@$digest"
done
exit "$status"
