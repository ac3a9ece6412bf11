"""The demo's model: an elliptical Sersic galaxy image with Gaussian noise, seven parameters."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    pass


PARAMETER_NAMES = ("x", "y", "g1", "g2", "log_intensity", "log_radius", "log_index")
IMAGE_SHAPE = (100, 100)
PIXEL_SCALE = 0.1  # arcsec per pixel
NOISE_SIGMA = 0.5  # per pixel, in the image's flux units

#: The simulated galaxy: centre (0.3, -0.2)", axis ratio 0.46 at 15 deg,
#: intensity 2.0 at the effective radius 1.0", Sersic index 2.
TRUTH = np.array([0.3, -0.2, 0.35, 0.2, math.log(2.0), math.log(1.0), math.log(2.0)], np.float32)
#: Where the sampler starts: offset, round, too faint, too big, exponential.
START = np.array([-1.5, 1.2, 0.0, 0.0, math.log(0.5), math.log(2.5), 0.0], np.float32)
PRIOR_MEAN = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, math.log(2.5)], np.float32)
PRIOR_SIGMA = np.array([2.0, 2.0, 1.0, 1.0, 2.0, 1.0, 0.6], np.float32)

def pixel_grid(shape: tuple[int, int] = IMAGE_SHAPE, scale: float = PIXEL_SCALE) -> tuple:
    """Pixel-centre coordinates in arcsec, origin at the centre, y up (row 0 at the bottom)."""
    rows, cols = shape
    x = (np.arange(cols, dtype=np.float32) - (cols - 1) / 2) * scale
    y = (np.arange(rows, dtype=np.float32) - (rows - 1) / 2) * scale
    return np.meshgrid(x, y)


def _sersic_b(n: Any) -> Any:
    """Ciotti & Bertin's (1999) expansion of b_n, so I(R_e) is the intensity parameter."""
    return 2.0 * n - 1.0 / 3.0 + 4.0 / (405.0 * n) + 46.0 / (25515.0 * n * n)


def sersic_image(params: Any, x: Any, y: Any, xp: Any = np) -> Any:
    """The model image for one parameter vector, with NumPy (``xp=np``) or ``jax.numpy``.

    One implementation for both, so the picture shows exactly the model the
    sampler fits. The elliptical radius is written in (e1, e2) without square
    roots or angles, so it is smooth everywhere (also at e = 0).
    """
    x0, y0, g1, g2, log_i, log_r, log_n = (params[i] for i in range(7))
    # (g1, g2) in the plane -> (e1, e2) in the unit disc; 1 - |e|^2 = 1 / (1 + |g|^2)
    g2sum = 1.0 + g1 * g1 + g2 * g2
    norm = xp.sqrt(g2sum)
    e1, e2 = g1 / norm, g2 / norm
    dx, dy = x - x0, y - y0
    r2 = g2sum * (
        (1.0 + e1 * e1 + e2 * e2) * (dx * dx + dy * dy)
        - 2.0 * (e1 * (dx * dx - dy * dy) + 2.0 * e2 * dx * dy)
    )
    n = xp.exp(log_n)
    # (r / R)^(1/n); the small floor keeps the gradient finite at the very centre
    scaled = ((r2 + 1e-6) * xp.exp(-2.0 * log_r)) ** (0.5 / n)
    return xp.exp(log_i - _sersic_b(n) * (scaled - 1.0))


def physical_parameters(params: Any) -> dict[str, float]:
    """The fit in the usual terms: centre, axis ratio q, position angle (deg), R_e, n, I_e."""
    p = np.asarray(params, dtype=np.float64)
    g = math.hypot(p[2], p[3])
    e = g / math.sqrt(1.0 + g * g)
    return {
        "x": float(p[0]),
        "y": float(p[1]),
        "q": (1.0 - e) / (1.0 + e),
        "angle": math.degrees(0.5 * math.atan2(p[3], p[2])) % 180.0,
        "radius": math.exp(p[5]),
        "index": math.exp(p[6]),
        "intensity": math.exp(p[4]),
    }


def describe_parameters(params: Any, degree: str = "°") -> str:
    p = physical_parameters(params)
    return (
        f"centre ({p['x']:+.2f}, {p['y']:+.2f})\"  q {p['q']:.2f}  PA {p['angle']:.0f}{degree}  "
        f"R_e {p['radius']:.2f}\"  n {p['index']:.2f}  I_e {p['intensity']:.2f}"
    )


@dataclass(frozen=True)
class Observation:
    """A simulated image with its (known, uniform) noise."""

    data: np.ndarray  # (rows, cols) float32
    noise_sigma: float
    pixel_scale: float
    truth: np.ndarray
    seed: int

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """``imshow`` extent in arcsec (pixel edges)."""
        rows, cols = self.data.shape
        half_x, half_y = cols * self.pixel_scale / 2, rows * self.pixel_scale / 2
        return (-half_x, half_x, -half_y, half_y)


def simulate(seed: int = 0, truth: np.ndarray = TRUTH) -> Observation:
    """The seeded galaxy image: the Sersic model at ``truth`` plus Gaussian noise."""
    x, y = pixel_grid()
    clean = sersic_image(np.asarray(truth, np.float64), x.astype(np.float64), y.astype(np.float64))
    noise = np.random.default_rng(seed).normal(0.0, NOISE_SIGMA, size=clean.shape)
    return Observation(
        data=(clean + noise).astype(np.float32),
        noise_sigma=NOISE_SIGMA,
        pixel_scale=PIXEL_SCALE,
        truth=np.asarray(truth, np.float32),
        seed=seed,
    )


def log_likelihood(params: Any, observation: Observation) -> float:
    """The Gaussian log-likelihood on the host (NumPy), with its normalisation."""
    x, y = pixel_grid(observation.data.shape, observation.pixel_scale)
    model = sersic_image(np.asarray(params, np.float64), x, y)
    chi = (observation.data - model) / observation.noise_sigma
    return float(-0.5 * np.sum(chi * chi) + log_norm(observation))


def log_norm(observation: Observation) -> float:
    return -observation.data.size * math.log(observation.noise_sigma * math.sqrt(2 * math.pi))
