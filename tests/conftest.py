import os
import sys
from pathlib import Path

# Tests import the package from the checkout and helpers from tests/.
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / 'tests')]
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.pop('NST_COMPILE_CACHE', None)  # runs compile, as on a new machine
from nst import backend  # noqa: E402

backend.setup()  # the runs' CPU kernels, before JAX starts
