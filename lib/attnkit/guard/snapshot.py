"""Snapshots of the attributes a grading kernel must not see changed.

Before every cell the guard compares module and class dictionaries (``torch``, ``numpy``, the
testing modules, ``builtins``, every ``attnkit`` module, ``torch.Tensor``...) with the snapshot
taken at install time, by identity, and puts back whatever a student cell changed.
"""
from __future__ import annotations

import sys


_MODULES = ("builtins", "math", "time", "torch", "torch.nn.functional", "torch.testing",
            "numpy", "numpy.testing")
_CLASSES = (("torch", "Tensor"), ("torch.nn", "Module"))
# Single attributes of other modules: the guard's thread wrapper (attnkit.guard.dispatch).
_KEYS = {"_thread": ("start_new_thread", "start_new"), "threading": ("_start_new_thread",)}


def protected_namespaces() -> list[tuple[str, object, bool]]:
    """(label, object, is_class) for every namespace whose attributes the guard snapshots."""
    out = []
    for name in _MODULES:
        if name in sys.modules:
            out.append((name, sys.modules[name], False))
    for name, mod in sorted(sys.modules.items()):
        if (name == "attnkit" or name.startswith("attnkit.")) and mod is not None and name not in _MODULES:
            out.append((name, mod, False))
    for mod_name, cls_name in _CLASSES:
        mod = sys.modules.get(mod_name)
        if mod is not None and isinstance(getattr(mod, cls_name, None), type):
            out.append((f"{mod_name}.{cls_name}", getattr(mod, cls_name), True))
    return out


# Set by IPython (builtin_trap) and ipykernel (input forwarding) around every cell.
_VOLATILE = {"builtins": {"input", "get_ipython", "exit", "quit", "display", "raw_input", "_"},
             "torch": {"Storage"}}  # set_default_dtype rebinds torch.Storage


class Snapshot:
    """Identity snapshot of module and class dictionaries; ``restore`` undoes changes."""

    def __init__(self):
        self.items = [(label, obj, is_cls, {k: v for k, v in vars(obj).items()
                                            if k not in _VOLATILE.get(label, ())})
                      for label, obj, is_cls in protected_namespaces()]
        for name, keys in _KEYS.items():
            mod = sys.modules.get(name)
            if mod is not None:
                self.items.append((name, mod, False, {k: vars(mod)[k] for k in keys if k in vars(mod)}))

    def changes(self) -> list[str]:
        out = []
        for label, obj, is_cls, saved in self.items:
            now = vars(obj)
            for key, value in saved.items():
                if key not in now or now[key] is not value:
                    out.append(f"{label}.{key}")
            if is_cls:
                out.extend(f"{label}.{key}" for key in now if key not in saved)
        return out

    def restore(self) -> list[str]:
        changed = self.changes()
        if not changed:
            return []
        for label, obj, is_cls, saved in self.items:
            now = vars(obj)
            for key, value in saved.items():
                if key not in now or now[key] is not value:
                    if is_cls:
                        type.__setattr__(obj, key, value)
                    else:
                        now[key] = value
            if is_cls:
                for key in [k for k in now if k not in saved]:
                    type.__delattr__(obj, key)
        return changed
