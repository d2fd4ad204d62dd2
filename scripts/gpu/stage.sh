#!/usr/bin/env bash
# On the GPU machine, one device call per carried part (docs/gpu-bundle.md has the call sequence):
#   bash scripts/gpu/stage.sh bundle/vllm-0.33.0/call03
# Checks the part's sha256 against the manifest carried beside it, puts it into $KIT_STAGE (default
# /tmp/kit-bundle; /tmp lasts only while the machine stays warm), says which calls are still to carry, and
# once all parts are there runs install-bundle.sh (unpack into $KIT_SITE, default /tmp/site, and the smoke
# checks) unless that bundle is installed already. KIT_NO_INSTALL=1 skips that. Idempotent: a part
# staged twice is checked and left alone.
set -uo pipefail
cd "$(dirname "$0")/../.."
[[ $# -ge 1 ]] || { echo "usage: $0 bundle/vllm-VERSION/callNN [...]" >&2; exit 2; }
STAGE=${KIT_STAGE:-/tmp/kit-bundle}
rc=3
for call in "$@"; do
  python3 scripts/gpu/bundle_cli.py stage "$call" --stage "$STAGE"; rc=$?
  [[ $rc -eq 0 || $rc -eq 3 ]] || exit "$rc"
done
if [[ $rc -eq 0 && "${KIT_NO_INSTALL:-0}" != 1 ]]; then
  python3 scripts/gpu/bundle_cli.py installed --stage "$STAGE" --site "${KIT_SITE:-/tmp/site}" && exit 0
  exec bash scripts/gpu/install-bundle.sh
fi
exit 0
