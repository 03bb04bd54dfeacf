"""ComfyUI node adapters: every module of this package contributes its NODE_CLASS_MAPPINGS; every node's FLOAT and
tensor inputs are checked for NaN / infinity before it runs (checks.guard_finite_inputs)."""
import importlib
import pkgutil

from .checks import guard_finite_inputs

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    _module = importlib.import_module(f"{__name__}.{_info.name}")
    NODE_CLASS_MAPPINGS.update(getattr(_module, "NODE_CLASS_MAPPINGS", {}))
    NODE_DISPLAY_NAME_MAPPINGS.update(getattr(_module, "NODE_DISPLAY_NAME_MAPPINGS", {}))

for _node_class in NODE_CLASS_MAPPINGS.values():
    guard_finite_inputs(_node_class)
