"""Deprecated name of `fishertune.sparse` (renamed in 0.1.1; this alias goes in 0.2).

"method" now means one thing, a registered tuner (the config's `method:` section); the model-agnostic
sparse-mask core lives in `fishertune.sparse`. Importing `fishertune.method` or any of its submodules
warns once and gives the `fishertune.sparse` module itself, so old code and pickled-free references keep
working unchanged.
"""

import importlib
import pkgutil
import sys
import warnings

from fishertune import sparse

warnings.warn("fishertune.method is deprecated: import fishertune.sparse instead (removed in 0.2)",
              DeprecationWarning, stacklevel=2)

for _info in pkgutil.iter_modules(sparse.__path__):
    sys.modules[f"{__name__}.{_info.name}"] = importlib.import_module(f"fishertune.sparse.{_info.name}")
sys.modules[__name__] = sparse
