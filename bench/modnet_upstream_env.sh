#!/usr/bin/env bash
# Builds a separate virtualenv holding upstream MODNet 0.4.5, for bench/modnet_parity.py --mode upstream.
#
# Upstream modnet 0.4.5 needs TensorFlow <= 2.15, pandas <= 1.5 and numpy < 2, so it cannot share hacknip's
# environment. Every version is pinned: unpinned, pip silently resolves to modnet 0.1.3 instead.
#
#   bash bench/modnet_upstream_env.sh [VENV]      # default VENV: /tmp/venv-modnet
#   VENV/bin/python bench/modnet_parity.py --mode upstream --features phonons_chgnet.npz
set -euo pipefail

VENV="${1:-/tmp/venv-modnet}"
PYTHON="${PYTHON:-python3}"

"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --upgrade pip
"$VENV/bin/python" -m pip install "modnet==0.4.5" "matminer==0.9.3" "scipy<1.17"
"$VENV/bin/python" -c "import modnet, tensorflow, numpy, pandas; print('modnet', modnet.__version__, \
'tensorflow', tensorflow.__version__, 'numpy', numpy.__version__, 'pandas', pandas.__version__)"
