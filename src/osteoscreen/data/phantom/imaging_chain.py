"""How a panoramic radiograph is formed from the phantom's object model, and how a device stores it.

`form_radiograph` turns a map of projected attenuation (line integrals of the linear attenuation coefficient,
dimensionless; bone and teeth high, the airway low) into stored pixel values:

1. primary transmission exp(-A);
2. unsharpness before the detector (focal spot, the rotational motion that defines the image layer; stronger
   horizontally): a Gaussian of standard deviation `object_blur_mm`, horizontal x
   `motion_ratio`;
3. scatter and veiling glare: `scatter_fraction` x the transmission averaged over ~15 mm (a scatter-to-primary
   ratio), a low-frequency haze that lowers contrast;
4. quantum noise: Poisson statistics of `photons` quanta per pixel where nothing attenuates (Gaussian
   approximation), then the detector's own blur (`detector_blur_mm`), which also correlates the noise;
   electronic (read) noise added after, white;
5. the log transform every digital X-ray system applies (bone bright), a per-device display curve (window and
   gamma: exposure and processing vary between devices, never with the label);
6. quantisation to the device's bit depth (12 bits).

The two blurs together give a Gaussian system MTF, exp(-2 pi^2 sigma^2 f^2), that falls to 10 % at `mtf10_lp_mm`
line pairs per mm, drawn per device from MTF10_LP_MM (2.9-3.9 lp/mm; docs/phantom.md says why). For comparison,
a rotational panoramic machine measured with a slit (Dentomaxillofac Radiol 1996;25(5), PMID 9161187) reached an
MTF of 0.25 at 4 cycles/mm at the centre of the image layer, less away from it, with a noise-equivalent passband
of 1.2-1.4 cycles/mm; the horizontal/vertical difference follows Bäckström et al., Oral Radiology 1990. Every
parameter is in `Acquisition`, drawn per subject independently of the label.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from osteoscreen.data.phantom.grids import upsample

#: sigma (in mm) of a Gaussian MTF that falls to 10 % at 1 lp/mm: sqrt(ln 10 / (2 pi^2)).
_SIGMA_AT_1_LP_MM = math.sqrt(math.log(10) / (2 * math.pi**2))
SCATTER_RADIUS_MM = 15.0
BITS = 12
#: Ranges the per-device parameters are drawn from (uniformly).
PHOTONS = (4800.0, 12800.0)
MTF10_LP_MM = (2.9, 3.9)
DETECTOR_SHARE = (0.39, 0.59)


@dataclass(frozen=True)
class Acquisition:
    """One exposure on one device: geometry, unsharpness, scatter, noise and display (drawn per subject)."""

    width: int
    height: int
    spacing_mm: float
    mtf10_lp_mm: float
    motion_ratio: float
    detector_share: float
    scatter_fraction: float
    photons: float
    electronic_noise: float
    window_low: float
    window_high: float
    gamma: float

    @staticmethod
    def sample(rng: np.random.Generator) -> Acquisition:
        width = int(rng.integers(2000, 3001))
        field_of_view_mm = rng.uniform(250.0, 290.0)
        spacing = round(field_of_view_mm / width, 6)
        height = int(np.clip(round(width * rng.uniform(0.46, 0.52)), 1000, 1500))
        return Acquisition(width, height, spacing, mtf10_lp_mm=rng.uniform(*MTF10_LP_MM),
                           motion_ratio=rng.uniform(1.0, 1.5), detector_share=rng.uniform(*DETECTOR_SHARE),
                           scatter_fraction=rng.uniform(0.3, 0.6), photons=rng.uniform(*PHOTONS),
                           electronic_noise=rng.uniform(0.0005, 0.0015), window_low=rng.uniform(0.0, 0.02),
                           window_high=rng.uniform(0.98, 1.0), gamma=rng.uniform(0.85, 1.2))

    @property
    def blur_mm(self) -> float:
        """Total system blur (Gaussian sigma, mm) of the MTF's 10 % frequency."""
        return _SIGMA_AT_1_LP_MM / self.mtf10_lp_mm

    @property
    def detector_blur_mm(self) -> float:
        return self.blur_mm * math.sqrt(self.detector_share)

    @property
    def object_blur_mm(self) -> float:
        return self.blur_mm * math.sqrt(1.0 - self.detector_share)


def _coarse_blur(image: np.ndarray, sigma_px: float, factor: int) -> np.ndarray:
    """A wide Gaussian blur computed on a grid `factor` times coarser and interpolated back (it is smooth)."""
    small = image[::factor, ::factor]
    return upsample(ndimage.gaussian_filter(small, sigma_px / factor, mode="nearest"), image.shape)


def form_radiograph(attenuation: np.ndarray, acquisition: Acquisition, rng: np.random.Generator) -> np.ndarray:
    """[H, W] projected attenuation -> [H, W] uint16 stored values (0 .. 2**BITS - 1), bone bright. Float32
    throughout, in place where a step allows (each full-image pass is memory-bound)."""
    px = acquisition.spacing_mm
    primary = np.exp(-attenuation.astype(np.float32))
    sigma_object = acquisition.object_blur_mm / px
    primary = ndimage.gaussian_filter(primary, (sigma_object, sigma_object * acquisition.motion_ratio))
    scatter = _coarse_blur(primary, SCATTER_RADIUS_MM / px, 8)
    scale = acquisition.photons / (1.0 + acquisition.scatter_fraction)
    scatter *= np.float32(acquisition.scatter_fraction * scale)
    quanta = primary
    quanta *= np.float32(scale)
    quanta += scatter  # photons x exposure: (primary + scatter_fraction x scatter) / (1 + scatter_fraction)
    noise = rng.standard_normal(quanta.shape, dtype=np.float32)
    noise *= np.sqrt(quanta)
    quanta += noise
    quanta = ndimage.gaussian_filter(quanta, acquisition.detector_blur_mm / px)
    noise = rng.standard_normal(quanta.shape, dtype=np.float32)
    noise *= np.float32(acquisition.electronic_noise * acquisition.photons)
    quanta += noise
    np.maximum(quanta, np.float32(1.0), out=quanta)
    log_signal = np.log(quanta, out=quanta)  # -log(quanta / photons), up to sign and offset, removed below
    low, high = np.percentile(log_signal[::4, ::4], [0.05, 99.95])
    # bone bright: the largest log signal (most quanta) is the least attenuation, mapped to 0
    unit = np.subtract(np.float32(high), log_signal, out=log_signal)
    unit *= np.float32(1.0 / max(high - low, 1e-6))
    np.clip(unit, 0.0, 1.0, out=unit)
    np.power(unit, np.float32(acquisition.gamma), out=unit)
    unit *= np.float32((acquisition.window_high - acquisition.window_low) * (2**BITS - 1))
    unit += np.float32(acquisition.window_low * (2**BITS - 1))
    return np.rint(unit, out=unit).astype(np.uint16)
