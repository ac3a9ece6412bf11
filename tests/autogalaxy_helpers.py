"""A small simulated PyAutoGalaxy imaging fit: a Sersic galaxy on a 40x40 grid.

A module of its own so a render process can load what the analysis refers to.
"""

from __future__ import annotations

import functools

import autofit as af
import autogalaxy as ag

PIXEL_SCALE = 0.1


@functools.cache
def sersic_imaging() -> ag.Imaging:
    grid = ag.Grid2D.uniform(shape_native=(40, 40), pixel_scales=PIXEL_SCALE)
    psf = ag.Convolver.from_gaussian(shape_native=(5, 5), sigma=0.1, pixel_scales=PIXEL_SCALE)
    simulator = ag.SimulatorImaging(exposure_time=300.0, psf=psf, background_sky_level=0.1,
                                    add_poisson_noise_to_data=True, noise_seed=1)
    galaxy = ag.Galaxy(redshift=0.5, bulge=ag.lp.Sersic(
        centre=(0.0, 0.0), ell_comps=(0.1, 0.0), intensity=1.0, effective_radius=0.6,
        sersic_index=2.0))
    dataset = simulator.via_galaxies_from(galaxies=[galaxy], grid=grid)
    mask = ag.Mask2D.circular(shape_native=dataset.shape_native, pixel_scales=PIXEL_SCALE,
                              radius=1.8)
    return dataset.apply_mask(mask=mask)


def sersic_model() -> af.Collection:
    return af.Collection(galaxies=af.Collection(
        galaxy=af.Model(ag.Galaxy, redshift=0.5, bulge=ag.lp.Sersic)))
