"""Public error types (defined in ``schemas.errors`` so every layer can raise them)."""

from schemas.errors import *  # noqa: F403  (the public names are schemas.errors.__all__)
from schemas.errors import __all__ as __all__
