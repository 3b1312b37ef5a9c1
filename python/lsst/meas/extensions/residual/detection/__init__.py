"""First-pass multi-band detection (footprints and peaks)."""

from .bright_stars import *  # noqa: F401,F403
from .detect import *  # noqa: F401,F403
from .io import *  # noqa: F401,F403
