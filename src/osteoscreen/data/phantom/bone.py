"""The phantom's bone: trabecular micro-architecture and the mandibular cortex as functions of a T-score.

Sources of every relation are in docs/phantom.md. Lengths are in mm, fields are [H, W] float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.special import ndtri

from osteoscreen.data.phantom.anatomy import soft_step

WHOLE = (slice(None), slice(None))  # the whole image, as a (rows, columns) window
#: How much coarser the projected texture looks than one slice's period Tb.Th + Tb.Sp (superimposed trabeculae).
PROJECTION_COARSENING = 2.0
#: The band-pass ring's width, as a fraction of its centre frequency (a wider ring: a less regular texture).
RING_WIDTH = 0.35


@dataclass(frozen=True)
class BoneParameters:
    """Apparent (projected) trabecular texture and cortex for one T-score; lengths in mm."""

    bone_volume_fraction: float
    trabecular_thickness_mm: float
    trabecular_separation_mm: float

    @property
    def projected_period_mm(self) -> float:
        """Period of the projected texture: superimposed trabeculae look coarser than one slice
        (PROJECTION_COARSENING)."""
        return PROJECTION_COARSENING * (self.trabecular_thickness_mm + self.trabecular_separation_mm)


def bone_parameters(t_score: float) -> BoneParameters:
    """Map a T-score to trabecular micro-architecture (docs/phantom.md gives the sources)."""
    volume_fraction = float(np.clip(0.34 + 0.045 * t_score, 0.08, 0.5))
    separation = float(np.clip(0.55 - 0.07 * t_score, 0.3, 1.2))
    thickness = separation * volume_fraction / (1.0 - volume_fraction)
    return BoneParameters(volume_fraction, thickness, separation)


def cortical_width_mm(t_score: float, rng: np.random.Generator) -> float:
    """Mandibular cortical width below the mental foramen: about 3.6 mm at T = 0, under 3 mm in osteoporosis."""
    return float(np.clip(3.6 + 0.35 * t_score + rng.normal(0, 0.3), 1.2, 5.5))


def trabecular_field(shape: tuple[int, int], params: BoneParameters, spacing_mm: float,
                     rng: np.random.Generator, anisotropy: float = 1.4, period_scale: float = 1.0,
                     within: tuple[slice, slice] = WHOLE) -> np.ndarray:
    """[H, W] float32 in [0, 1]: a trabecular network whose area fraction ≈ bone volume fraction; only its part
    `within` (rows, columns) is cut and returned, the same values as the whole field's.

    A Gaussian field whose spectrum is drawn directly (complex white noise on a Gaussian ring at the projected
    trabecular frequency, elongated along x by `anisotropy`, the preferred mesiodistal orientation; one inverse
    FFT), normalised to unit variance and cut to the band |g| < w around its zero level set: a connected labyrinth
    of struts (a level-cut Gaussian field), w chosen so that the band covers `bone_volume_fraction` of the area.
    """
    fy = np.fft.fftfreq(shape[0]).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(shape[1]).astype(np.float32)[None, :]
    centre = spacing_mm / (params.projected_period_mm * period_scale)  # cycles per pixel
    radius = np.sqrt((fx / np.float32(anisotropy)) ** 2 + fy**2)
    ring = np.exp(np.float32(-0.5) * ((radius - np.float32(centre)) / np.float32(RING_WIDTH * centre)) ** 2)
    noise = rng.standard_normal((2, *ring.shape), dtype=np.float32)
    filtered = np.fft.irfft2((noise[0] + 1j * noise[1]) * ring, s=shape).astype(np.float32)
    filtered /= filtered.std() + 1e-8
    half_width = ndtri((1.0 + params.bone_volume_fraction) / 2.0)
    return soft_step(half_width - np.abs(filtered[within]), 0.08).astype(np.float32)


#: Klemetti's mandibular cortical index (Klemetti et al. 1994): C1 an even, sharp endosteal margin; C2 semilunar
#: defects (lacunar resorption) or endosteal cortical residues; C3 a clearly porous cortex with heavy endosteal
#: residues. An ordinal model of the T-score, z = -MCI_SLOPE * T + N(0, 1) cut at MCI_CUTS, gives C1/C2/C3 of about
#: 60/35/5 % at T = 0.25 and 21/52/27 % at T = -3.25: a modelling choice that follows the reported pattern (C1
#: predominant with normal BMD, C2 and C3 with osteoporosis; Klemetti et al. 1994; Devlin & Horner 2002; the
#: systematic review of Munhoz et al., DMFR 2021), not a fit to one study's table.
MCI_SLOPE, MCI_CUTS = 0.3, (0.18, 1.57)
#: Per class: how deep into the cortex (fraction of its width, from the endosteal side) resorption reaches, the
#: scale (px) of the resorption cavities and the level above which the cavity field is bone-free.
_EROSION = {2: (0.35, 3.0, 0.8), 3: (0.7, 1.5, -0.3)}


def mci_class(t_score: float, rng: np.random.Generator) -> int:
    """Klemetti class 1, 2 or 3 for a (site) T-score."""
    z = -MCI_SLOPE * t_score + rng.standard_normal()
    return 1 + int(z >= MCI_CUTS[0]) + int(z >= MCI_CUTS[1])


def erode_cortex(cortex: np.ndarray, depth_px: np.ndarray, width_px: np.ndarray, mci: int,
                 rng: np.random.Generator, image_shape: tuple[int, int] | None = None,
                 within: tuple[slice, slice] = WHOLE) -> np.ndarray:
    """The cortex ([h, w] in [0, 1]) with the endosteal resorption of Klemetti class `mci`: none for C1, sparse
    semilunar cavities on the inner third for C2, a porous inner two thirds with residues for C3. depth_px: depth
    below the bone surface; width_px: the local cortical width. The three maps are the part `within` of an image
    of `image_shape` (default: the whole image, their own shape); the cavities are drawn for the whole image, so
    the part is the same whatever the window. They come from a child generator seeded by one draw from `rng`
    whatever the class, so the rest of the random stream does not depend on the class."""
    cavity_rng = np.random.default_rng(rng.integers(2**63))
    if mci == 1:
        return cortex
    reach, scale, level = _EROSION[mci]
    cavities = ndimage.gaussian_filter(cavity_rng.standard_normal(image_shape or cortex.shape, dtype=np.float32),
                                       scale)
    cavities /= cavities.std() + 1e-8
    inner = soft_step(depth_px - (1.0 - reach) * width_px, 1.0)
    return cortex * (1.0 - inner * soft_step(cavities[within] - level, 0.3))
