"""Real survey images into the scene format: units, noise and PSF estimation, and import.

`units` converts pixel values to nJy; `noise` estimates a variance plane from
the sky; `psf_estimation` builds a PSF from the stars of an image
(photutils' ePSF builder); `importing` checks and stacks per-band images
into a `~lsst.meas.extensions.residual.scene.Scene` (`scene_from_arrays`,
`import_fits`), recording in the header what was given and what estimated;
`injection` adds simulated sources to a scene, with their truth; `recovery`
scores the chain on an injected scene against the scene without them.
"""

from .importing import *  # noqa: F401,F403
from .injection import *  # noqa: F401,F403
from .noise import *  # noqa: F401,F403
from .psf_estimation import *  # noqa: F401,F403
from .recovery import *  # noqa: F401,F403
from .units import *  # noqa: F401,F403
