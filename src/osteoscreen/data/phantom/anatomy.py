"""The phantom's anatomy, label-independent: mandible, maxilla, teeth, soft tissue, airway, spine, skull-base and
contralateral-ramus shadows drawn on a coarse grid (fractions of the image's width and height, mirrored about the
midline), and the anatomical noise of overlapping structures."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from osteoscreen.core.landmarks import GROUPS

DOWNSAMPLE = 4  # anatomy is drawn at 1/DOWNSAMPLE of the final resolution
#: Temporal bone, articular eminence and zygomatic arch over the condyle (attenuation).
SKULL_BASE = 0.22
#: Attenuation of the contralateral ramus's ghost.
RAMUS_GHOST = 0.08
#: Power-law exponent of the anatomical noise.
CLUTTER_EXPONENT = 3.2
@dataclass(frozen=True)
class Anatomy:
    """Normalised anatomy of one subject (fractions of image width/height), mirrored about the midline."""

    angle_u: float
    angle_v: float
    chin_v: float
    body_height: float
    condyle_u: float
    condyle_v: float
    ramus_width: float
    occlusal_v: float
    arch_half_width: float
    missing_teeth: frozenset[int]

    @staticmethod
    def sample(rng: np.random.Generator) -> Anatomy:
        missing = frozenset(int(i) for i in rng.choice(32, size=rng.integers(0, 5), replace=False))
        return Anatomy(angle_u=0.17 + rng.normal(0, 0.008), angle_v=0.74 + rng.normal(0, 0.01),
                       chin_v=0.88 + rng.normal(0, 0.01), body_height=0.20 + rng.normal(0, 0.008),
                       condyle_u=0.145 + rng.normal(0, 0.006), condyle_v=0.30 + rng.normal(0, 0.01),
                       ramus_width=0.085 + rng.normal(0, 0.004), occlusal_v=0.57 + rng.normal(0, 0.008),
                       arch_half_width=0.27 + rng.normal(0, 0.006), missing_teeth=missing)

    def lower_border(self, u: np.ndarray) -> np.ndarray:
        """v of the mandible's inferior border at u (a smile-shaped curve between the angles)."""
        t = np.clip((u - 0.5) / (0.5 - self.angle_u), -1.0, 1.0)
        return self.chin_v - (self.chin_v - self.angle_v) * t ** 2

    def occlusal(self, u: np.ndarray) -> np.ndarray:
        t = (u - 0.5) / self.arch_half_width
        return self.occlusal_v - 0.035 * t ** 2

    def landmarks(self) -> np.ndarray:
        """[8, 2] (u, v) of the landmarks in LANDMARKS order (patient's right = image left, u < 0.5)."""
        points = {
            "condyle": (self.condyle_u + 0.01, self.condyle_v + 0.02),
            "angle": (self.angle_u + 0.022, self.angle_v - 0.02),
            "premolar": (0.5 - 0.125, float(self.lower_border(np.array(0.375))) - 0.085),
            "tuberosity": (0.5 - self.arch_half_width - 0.028, self.occlusal_v - 0.075),
        }
        out = []
        for group in GROUPS:
            u, v = points[group]
            out += [(u, v), (1.0 - u, v)]  # right (image left), then left (mirrored)
        return np.array(out)


def _capsule(uu, vv, a, b, radius_u, aspect):
    """Signed distance (in u units) to a segment a-b with radius radius_u; aspect = height/width of image."""
    pu, pv = uu - a[0], (vv - a[1]) * aspect
    du, dv = b[0] - a[0], (b[1] - a[1]) * aspect
    t = np.clip((pu * du + pv * dv) / (du * du + dv * dv), 0, 1)
    return np.hypot(pu - t * du, pv - t * dv) - radius_u


def _ellipse(uu, vv, centre, radii):
    """Positive inside an ellipse (1 at the centre), negative outside."""
    return 1.0 - ((uu - centre[0]) / radii[0]) ** 2 - ((vv - centre[1]) / radii[1]) ** 2


def soft_step(x, width):
    """The logistic step 1 / (1 + exp(-x / width)), as 0.5 + 0.5 tanh(x / (2 width)) (one transcendental, no
    overflow)."""
    return 0.5 + 0.5 * np.tanh(x * (0.5 / width))


def draw_anatomy(anatomy: Anatomy, shape: tuple[int, int], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Maps on the low-resolution grid `shape`: 'mandible' SDF (px, negative inside), 'inferior' weight of
    the inferior cortex, 'maxilla', 'teeth', 'soft' (soft tissue, airway, spine, skull base, hyoid and the
    contralateral ramus's ghost), 'head' (1 inside the head, where overlapping structures exist)."""
    height, width = shape
    aspect = height / width
    vv, uu = np.mgrid[0:height, 0:width].astype(np.float32)
    uu, vv = (uu + 0.5) / width, (vv + 0.5) / height
    mirrored = np.minimum(uu, 1.0 - uu)  # the anatomy is symmetric about the midline

    lower = anatomy.lower_border(uu)
    upper = lower - anatomy.body_height
    within_body = (uu > anatomy.angle_u - 0.01) & (uu < 1 - anatomy.angle_u + 0.01)
    body = within_body & (vv < lower) & (vv > upper)
    posterior_top = (anatomy.condyle_u, anatomy.condyle_v + 0.06)
    ramus = _capsule(mirrored, vv, (anatomy.angle_u + 0.035, anatomy.angle_v - 0.035), posterior_top,
                     anatomy.ramus_width / 2, aspect) < 0
    coronoid = _capsule(mirrored, vv, (anatomy.angle_u + anatomy.ramus_width * 0.75, anatomy.angle_v - 0.14),
                        (anatomy.condyle_u + 0.07, anatomy.condyle_v + 0.1), 0.016, aspect) < 0
    condyle = _ellipse(mirrored, vv, (anatomy.condyle_u + 0.008, anatomy.condyle_v + 0.02), (0.022, 0.05)) > 0
    mandible = ndimage.gaussian_filter((body | ramus | coronoid | condyle).astype(np.float32), 4.0)
    mask = mandible > 0.5
    sdf = ndimage.distance_transform_edt(~mask) - ndimage.distance_transform_edt(mask)
    inferior = (soft_step(vv - (lower - anatomy.body_height * 0.35), 0.01)
                * soft_step(mirrored - anatomy.angle_u - 0.04, 0.02))

    maxilla_band = (soft_step(vv - (anatomy.occlusal(uu) - 0.16), 0.008)
                    * soft_step(anatomy.occlusal(uu) - 0.02 - vv, 0.008)
                    * soft_step(mirrored - (0.5 - anatomy.arch_half_width - 0.035), 0.008))
    sinus = np.clip(_ellipse(mirrored, vv, (0.33, anatomy.occlusal_v - 0.2), (0.09, 0.07)), 0, 1)
    palate = np.exp(-0.5 * ((vv - (anatomy.occlusal_v - 0.16)) / 0.012) ** 2) * soft_step(mirrored - 0.22, 0.01)
    maxilla = np.clip(maxilla_band * (1 - 0.7 * sinus) + 0.8 * palate, 0, 1.2)

    teeth = _draw_teeth(anatomy, uu, vv)

    outline = _ellipse(uu, vv, (0.5, 0.55), (0.5, 0.55))
    face = np.clip(outline, 0, 1) ** 0.5
    head = soft_step(outline - 0.06, 0.03)  # where anything overlaps the jaws: inside the head
    tongue = np.clip(_ellipse(uu, vv, (0.5, anatomy.occlusal_v - 0.03), (0.26, 0.06)), 0, 1) ** 0.5
    airway_axis = _capsule(mirrored, vv, (anatomy.angle_u + 0.045, 0.32), (anatomy.angle_u + 0.07, 1.1), 0.012,
                           aspect)
    airway = soft_step(-airway_axis, 0.008)
    soft = 0.16 * face + 0.07 * tongue - 0.10 * airway
    vertebrae = (np.sin(vv * 2 * np.pi * 5.5 + rng.uniform(0, 6)) > -0.4).astype(np.float32)
    spine = soft_step(0.06 - mirrored, 0.012) * (0.5 + 0.5 * vertebrae) * soft_step(vv - 0.2, 0.03)
    hyoid = np.clip(_ellipse(mirrored, vv, (0.33, 0.95), (0.05, 0.012)), 0, 1)
    # temporal bone and articular eminence above the condyle, the zygomatic arch across it (they overlap the joint)
    skull_base = soft_step(anatomy.condyle_v + 0.01 - vv, 0.025) * soft_step(mirrored - 0.06, 0.02)
    zygoma = np.exp(-0.5 * ((vv - anatomy.condyle_v - 0.01) / 0.025) ** 2) * soft_step(mirrored - 0.08, 0.02) \
        * soft_step(0.36 - mirrored, 0.03)
    # the ghost of the opposite ramus: projected through the midline with the beam's upward tilt it lands higher,
    # wider and far out of focus over this side's ramus and posterior maxilla
    shift = 0.12
    ghost = _capsule(mirrored, vv, (anatomy.angle_u + 0.055, anatomy.angle_v - 0.035 - shift),
                     (anatomy.condyle_u + 0.02, anatomy.condyle_v + 0.06 - shift), anatomy.ramus_width * 0.8,
                     aspect) < 0
    ghost = ndimage.gaussian_filter(ghost.astype(np.float32), 0.006 * width)  # about 6 mm wide blur
    soft = (soft + 0.25 * ndimage.gaussian_filter(spine, 3) + 0.2 * hyoid
            + SKULL_BASE * (skull_base + 0.6 * zygoma) + RAMUS_GHOST * ghost)
    return {"mandible": sdf.astype(np.float32), "inferior": inferior.astype(np.float32),
            "head": head.astype(np.float32),
            "maxilla": maxilla.astype(np.float32), "teeth": teeth.astype(np.float32), "soft": soft.astype(np.float32)}


def _draw_teeth(anatomy: Anatomy, uu: np.ndarray, vv: np.ndarray) -> np.ndarray:
    """Density of 32 teeth (crowns with enamel caps, roots with pulp canals) along the two arches."""
    widths = np.array([0.020, 0.020, 0.022, 0.024, 0.024, 0.034, 0.034, 0.030])  # incisor ... third molar
    centres = np.concatenate([[0.0], np.cumsum(widths[:-1] + widths[1:]) / 2]) + widths[0] / 2
    centres *= anatomy.arch_half_width / (centres[-1] + widths[-1] / 2)
    density = np.zeros_like(uu)
    for arch, direction in ((0, 1.0), (1, -1.0)):  # lower teeth grow down from the occlusal plane, upper up
        for side in (-1.0, 1.0):
            for index, (centre, tooth_width) in enumerate(zip(centres, widths, strict=True)):
                number = arch * 16 + (8 + index if side > 0 else 7 - index)
                if number in anatomy.missing_teeth:
                    continue
                u0 = 0.5 + side * centre
                v0 = float(anatomy.occlusal(np.array(u0))) + direction * 0.004
                crown_height, root_length = 0.075, 0.12 + 0.02 * (index < 3)
                reach = crown_height + root_length
                window = _window(uu.shape, (u0 - tooth_width * 0.46, u0 + tooth_width * 0.46),
                                 (v0, v0 + reach) if direction > 0 else (v0 - reach, v0))
                depth = direction * (vv[window] - v0)  # distance into the jaw from the occlusal plane
                across = np.abs(uu[window] - u0) / (tooth_width * 0.46)
                crown = (depth > 0) & (depth < crown_height) & (across < 1 - 0.5 * (1 - depth / crown_height) ** 6)
                taper = 1 - np.clip((depth - crown_height) / root_length, 0, 1)
                roots = (depth >= crown_height) & (depth < crown_height + root_length)
                if index >= 5:  # molars: two roots
                    root = roots & (np.abs(across - 0.5) < 0.35 * taper + 0.05)
                else:
                    root = roots & (across < 0.75 * taper + 0.05)
                enamel = crown & (depth < 0.022)
                pulp = (depth > 0.03) & (depth < crown_height + root_length * 0.8) & (across < 0.12 * (taper + 0.3))
                density[window] += 0.75 * crown + 0.4 * root + 0.35 * enamel - 0.3 * pulp
    return ndimage.gaussian_filter(density, 0.8)


def _window(shape: tuple[int, int], u_range: tuple[float, float], v_range: tuple[float, float]
            ) -> tuple[slice, slice]:
    """The rows and columns of a grid of `shape` (pixel centres at (i + 0.5) / size) that cover the given u and v
    ranges, with a pixel to spare."""
    height, width = shape
    rows = slice(max(int(v_range[0] * height) - 1, 0), min(int(v_range[1] * height) + 2, height))
    cols = slice(max(int(u_range[0] * width) - 1, 0), min(int(u_range[1] * width) + 2, width))
    return rows, cols


def anatomical_noise(shape: tuple[int, int], spacing_mm: float, rng: np.random.Generator) -> np.ndarray:
    """[H, W] float32, unit standard deviation: a Gaussian field with power spectrum ~ 1/f^CLUTTER_EXPONENT above
    1 cycle per 60 mm: overlapping soft tissue and structures outside the image layer (anatomical noise in projection
    radiography has exponents near 3: Burgess et al. 2001; Hoeschen & Buhr 2007)."""
    spectrum = np.fft.rfft2(rng.standard_normal(shape).astype(np.float32))
    fy = np.fft.fftfreq(shape[0])[:, None] / spacing_mm
    fx = np.fft.rfftfreq(shape[1])[None, :] / spacing_mm
    frequency = np.maximum(np.hypot(fx, fy), 1 / 60.0)  # cycles per mm
    field = np.fft.irfft2(spectrum * frequency ** (-CLUTTER_EXPONENT / 2), s=shape).astype(np.float32)
    return field / (field.std() + 1e-8)
