"""The seed's handler, loaded from examples/custom_callbacks.py, so the bench measures that very file."""

import importlib.util
from pathlib import Path

SEED = Path(__file__).resolve().parents[2] / "examples" / "custom_callbacks.py"

_spec = importlib.util.spec_from_file_location("bench_seed_custom_callbacks", SEED)
if _spec is None or _spec.loader is None:
    raise ImportError(f"cannot load {SEED}")
_seed = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_seed)

proxy_handler_instance = _seed.proxy_handler_instance
