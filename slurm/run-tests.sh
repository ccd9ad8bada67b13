#!/usr/bin/env bash
# Run the `slurm`-marked tests against the local test cluster: start it, run, stop it
# (also on failure). Used by `make test`; extra arguments go to pytest.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
PY="${PY:-$REPO/.venv/bin/python}"
DIR="${BRAINXL_SLURM_DIR:-$REPO/.slurm-cluster}"
bash slurm/start-cluster.sh
trap 'bash slurm/stop-cluster.sh' EXIT
BRAINXL_REQUIRE_SLURM=1 SLURM_CONF="$DIR/etc/slurm.conf" "$PY" -m pytest -q -m slurm "$@"
