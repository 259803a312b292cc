"""Physics-based synthetic scenes for training cloud masks on any band set.

Real land spectra (earthlib) and hand-written water, snow, ice, sand, salt and cloud models are
arranged in spatially coherent layouts, covered by optical-thickness fields of cumulus,
stratocumulus, stratus and cirrus with cast shadows, seen through a simple atmosphere and a
noisy sensor, and band-integrated for any :class:`BandSet`. Labels (clear / thick / thin /
shadow) come from the generated optical thickness and geometry; see :class:`SyntheticConfig`.

>>> gen = SceneGenerator(SyntheticConfig(size=64), seed=0)
>>> s2 = gen.sample(sensor_bandset("sentinel-2a"), index=3)
>>> l7 = gen.sample(sensor_bandset("landsat-7"), index=3)  # same scene, same labels
"""

from xsensei.training.synthetic.bands import (
    BandSet,
    band_weights,
    random_bandset,
    sensor_bandset,
)
from xsensei.training.synthetic.scenes import (
    LABELS,
    PHYSICS_VERSIONS,
    Sample,
    Scene,
    SceneGenerator,
    SyntheticConfig,
)
from xsensei.training.synthetic.spectra import GRID_NM, SURFACE_CLASSES

#: Newest image formation (``SyntheticConfig.physics``); bump, keeping the old one selectable,
#: when a change alters what a given (config, seed, index) generates. 1.1: single-scattering
#: Rayleigh path and transmittance, bounded multiple reflection (no +-1e4 pixels). 1.2: 1.1 plus
#: 3-D cloud tops (sunlit and shaded slopes); recipes select it explicitly.
GENERATOR_VERSION = PHYSICS_VERSIONS[-1]

__all__ = [
    "GRID_NM",
    "LABELS",
    "PHYSICS_VERSIONS",
    "SURFACE_CLASSES",
    "BandSet",
    "Sample",
    "Scene",
    "SceneGenerator",
    "SyntheticConfig",
    "band_weights",
    "random_bandset",
    "sensor_bandset",
]
