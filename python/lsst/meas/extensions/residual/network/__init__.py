"""The Mask R-CNN detector: model builder, channel recipes, model packages, tiled inference."""

from .calibration import *  # noqa: F401,F403
from .footprints import *  # noqa: F401,F403
from .inference import *  # noqa: F401,F403
from .inference_config import *  # noqa: F401,F403
from .model import *  # noqa: F401,F403
from .package import *  # noqa: F401,F403
from .recipes import *  # noqa: F401,F403
