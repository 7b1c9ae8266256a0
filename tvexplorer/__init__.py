"""tvexplorer: explore CLIP task vectors, their first-epoch gradients, and model merging (incl. ATM)."""
__version__ = "0.1.0"

from .core.cache import Cache
from .core.errors import CacheError  # noqa: E402
from .merging import METHODS, merge, merge_flat  # noqa: E402

__all__ = ["Cache", "CacheError", "METHODS", "merge", "merge_flat", "__version__"]
