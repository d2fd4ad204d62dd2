#!/usr/bin/env bash
# On the GPU machine, after all parts are staged (stage.sh runs this itself after the last one):
#   bash scripts/gpu/install-bundle.sh            # unpack once into $KIT_SITE, write kit-env.sh, smoke checks
#   source /tmp/site/kit-env.sh                    # in every later call, before starting vLLM
# kit-env.sh puts the bundle first: PYTHONPATH=/tmp/site (torch, triton, vLLM and the Python packages the
# machine lacks shadow the machine's), LD_LIBRARY_PATH with the carried NVIDIA libraries (NCCL) before any
# the machine has, and the environment the bundle needs (KIT-BUNDLE.json says why).
# KIT_SMOKE=0 skips the smoke checks; KIT_SMOKE=cpu runs only those that need no GPU.
set -uo pipefail
cd "$(dirname "$0")/../.."
STAGE=${KIT_STAGE:-/tmp/kit-bundle}
SITE=${KIT_SITE:-/tmp/site}
python3 scripts/gpu/bundle_cli.py unpack --stage "$STAGE" --site "$SITE" || exit $?
python3 scripts/gpu/bundle_cli.py merge --site "$SITE" || exit $?
python3 scripts/gpu/bundle_cli.py env --site "$SITE" > "$SITE/kit-env.sh" || exit $?
echo "install: wrote $SITE/kit-env.sh:"; sed 's/^/  /' "$SITE/kit-env.sh"
MODE=${KIT_SMOKE:-gpu}
[[ "$MODE" == 0 ]] && exit 0
# shellcheck disable=SC1091
source "$SITE/kit-env.sh"
PYTHONUNBUFFERED=1 python3 scripts/gpu/smoke.py --mode "$MODE"
