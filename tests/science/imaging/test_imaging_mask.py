import math

import numpy as np

from mousflow.science.imaging import AutoMaskParams, Beam, auto_mask, gaussian_image

CELL = 1e-6
BEAM = Beam(8 * CELL, 5 * CELL, 0.4)


def _image():
    rng = np.random.default_rng(0)
    img = rng.normal(0, 1.0, (128, 128))
    img += 100 * gaussian_image(BEAM, (128, 128), CELL, centre=(40, 50))  # the source
    img += 70 * gaussian_image(BEAM, (128, 128), CELL, centre=(90, 90))  # a 0.7 sidelobe of it
    img += 10 * gaussian_image(Beam(20 * CELL, 16 * CELL, 0.0), (128, 128), CELL, centre=(30, 100))  # faint, wide
    return img


def test_high_sidelobe_psf_masks_the_peak_but_not_its_sidelobe():
    mask = auto_mask(_image(), 1.0, BEAM, CELL, psf_sidelobe=0.71)
    assert mask[50, 40] and not mask[90, 90]
    assert mask.sum() < 0.02 * mask.size


def test_low_psf_sidelobes_mask_everything_significant_and_grow_into_wings():
    mask = auto_mask(_image(), 1.0, BEAM, CELL, psf_sidelobe=0.05)
    assert mask[50, 40] and mask[90, 90] and mask[100, 30]
    # the wide source's island extends over its wings above 2 sigma (radius ~1.5 FWHM/2 there)
    y, x = np.mgrid[0:128, 0:128]
    r = np.hypot(x - 30, y - 100) * CELL
    assert np.all(mask[r < 0.5 * 16 * CELL])
    no_growth = auto_mask(_image(), 1.0, BEAM, CELL, psf_sidelobe=0.05,
                          params=AutoMaskParams(low_noise_threshold=None, grow_beams=0.0))
    assert no_growth.sum() < mask.sum()


def test_pure_noise_gives_an_empty_mask_and_prior_is_kept():
    rng = np.random.default_rng(1)
    img = rng.normal(0, 1.0, (128, 128))
    assert not auto_mask(img, 1.0, BEAM, CELL, psf_sidelobe=0.3).any()
    prior = np.zeros((128, 128), bool)
    prior[5:8, 5:8] = True
    assert np.array_equal(auto_mask(img, 1.0, BEAM, CELL, prior=prior) & prior, prior)
    assert math.isfinite(BEAM.area_pixels(CELL))
