"""Fixed, non-neural "painters": the known answers of the ground-truth benchmark and the sample data.

Each painter is a deterministic function of the photo (RGB uint8 in, RGB uint8 of the same shape out):
no randomness, no learned weights, and every output pixel depends only on a small neighbourhood of the
input, so a translation network can learn it exactly and a translation can be scored against it pixel by
pixel. They differ in what they change, because a recipe that only learns colour must not look good:

- ``colour``: edge-preserving smoothing, posterised lightness, a warm colour grade, darkened edges --
  mostly a colour and tone mapping (the bundled sample data's filter).
- ``oil``: a Kuwahara filter (flat patches of paint with hard borders, fine texture removed), a cool-teal /
  orange grade and an impasto relief (light from the top left on the paint's own height field): it
  changes texture.
- ``ink``: an ink drawing on warm paper -- dark outlines from a difference of Gaussians, shadows as a flat
  ink wash, everything else paper: tones become lines and flat areas change brightness, so it changes
  structure.

The filters are tuned for images of about 128 px. OpenCV's filters are bit-reproducible only with one
thread: callers that need identical files across machines call ``cv2.setNumThreads(1)`` first.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def _check(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB array, got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def colour(image_rgb_uint8: np.ndarray) -> np.ndarray:
    """A flat, warm "painting": mostly a colour and tone mapping.

    1. edge-preserving smoothing (three bilateral filters) removes fine texture and noise but keeps object
       borders sharp;
    2. posterisation in CIELAB: lightness is quantised to steps of 20 (flat patches of paint with visible
       borders between them) while the colour axes a and b are boosted by 30% and quantised finely;
    3. a warm colour grade: a and b are shifted towards red and yellow, shadows are lifted and highlights
       compressed (lightness 20 + 0.85 L), like old varnish;
    4. edges, from the Sobel gradient of the smoothed image, are darkened by up to 50% like outlines.
    """
    import cv2

    smooth = _check(image_rgb_uint8)
    for _ in range(3):
        smooth = cv2.bilateralFilter(smooth, d=7, sigmaColor=35, sigmaSpace=5)

    # OpenCV's 8-bit CIELAB scaling: L in 0..255, a and b offset by 128.
    lab = cv2.cvtColor(smooth, cv2.COLOR_RGB2LAB).astype(np.float32)
    lightness = np.round(lab[..., 0] / 20.0) * 20.0
    a = np.round((lab[..., 1] - 128.0) * 1.3 / 6.0) * 6.0
    b = np.round((lab[..., 2] - 128.0) * 1.3 / 6.0) * 6.0

    lightness = 20.0 + 0.85 * lightness
    a = a + 128.0 + 4.0
    b = b + 128.0 + 26.0
    lab = np.clip(np.round(np.stack([lightness, a, b], axis=-1)), 0, 255).astype(np.uint8)
    graded = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB).astype(np.float32)

    gray = cv2.cvtColor(smooth, cv2.COLOR_RGB2GRAY).astype(np.float32)
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
    edges = np.clip((np.hypot(gx, gy) - 50.0) / 250.0, 0.0, 1.0)
    edges = cv2.GaussianBlur(edges, (3, 3), 0.8)
    out = graded * (1.0 - 0.5 * edges)[..., None]
    return _to_uint8(out)


def kuwahara(image: np.ndarray, radius: int) -> np.ndarray:
    """Kuwahara filter (float32 out): each pixel takes the mean colour of whichever of its four
    (radius+1)^2 corner windows has the lowest luminance variance, which flattens regions into patches
    and keeps their borders hard (Kuwahara et al. 1976). Box filters make it O(1) per pixel."""
    import cv2

    k = radius + 1
    image = image.astype(np.float32)
    lum = image @ np.array([0.299, 0.587, 0.114], np.float32)
    means, variances = [], []
    for anchor in ((0, 0), (radius, 0), (0, radius), (radius, radius)):
        # the window of pixel p is [p - anchor, p - anchor + k): one corner window per anchor
        box = lambda x, anchor=anchor: cv2.boxFilter(x, -1, (k, k), anchor=anchor, borderType=cv2.BORDER_REFLECT)  # noqa: E731
        mean_lum = box(lum)
        variances.append(box(lum * lum) - mean_lum * mean_lum)
        means.append(box(image))
    best = np.argmin(np.stack(variances), axis=0)[None, ..., None]
    return np.take_along_axis(np.stack(means), np.repeat(best, 3, axis=-1), axis=0)[0]


def oil(image_rgb_uint8: np.ndarray) -> np.ndarray:
    """An oil painting: flat patches of paint (Kuwahara), a teal/orange grade and an impasto relief.

    1. a light bilateral pre-smoothing, then a Kuwahara filter of radius 4: fine texture is gone, regions
       become flat patches with hard borders;
    2. colour grade in CIELAB: lightness contrast raised around the middle grey, shadows pushed towards
       teal and highlights towards orange, chroma boosted by 40%;
    3. impasto: the painted lightness is read as a height field and lit from the top left (the gradient
       along (1, 1) after a small blur), brightening one side of every stroke border and darkening the
       other, by up to 40 grey levels.
    """
    import cv2

    image = _check(image_rgb_uint8)
    smooth = cv2.bilateralFilter(image, d=5, sigmaColor=25, sigmaSpace=3)
    flat = _to_uint8(kuwahara(smooth, radius=4))

    lab = cv2.cvtColor(flat, cv2.COLOR_RGB2LAB).astype(np.float32)
    lightness, a, b = lab[..., 0], lab[..., 1] - 128.0, lab[..., 2] - 128.0
    lightness = np.clip(128.0 + 1.25 * (lightness - 128.0), 0, 255)
    tone = (lightness - 128.0) / 128.0  # -1 in the shadows .. +1 in the highlights
    a = 1.4 * a + 10.0 * tone - 4.0
    b = 1.4 * b + 22.0 * tone
    graded_lab = np.stack([lightness, a + 128.0, b + 128.0], axis=-1)
    graded = cv2.cvtColor(_to_uint8(graded_lab), cv2.COLOR_LAB2RGB).astype(np.float32)

    height = cv2.GaussianBlur(lightness, (3, 3), 0.8)
    gx = cv2.Sobel(height, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(height, cv2.CV_32F, 0, 1, ksize=3)
    relief = np.clip(-(gx + gy) / 6.0, -40.0, 40.0)  # light from the top left
    return _to_uint8(graded + relief[..., None])


PAPER = np.array([242.0, 232.0, 208.0], np.float32)  # warm paper
INK = np.array([28.0, 24.0, 40.0], np.float32)  # blue-black ink


def ink(image_rgb_uint8: np.ndarray) -> np.ndarray:
    """An ink drawing on paper: outlines where the photo has edges, a flat wash in its shadows.

    1. lightness of a lightly smoothed photo;
    2. outlines: a difference of Gaussians (sigma 1.0 and 1.6) thresholded softly, so that every edge of
       enough contrast becomes a dark line about two pixels wide (Winnemoeller et al. 2012, XDoG);
    3. tone: the darkest third of the picture becomes a flat ink wash at 55% of full ink, the rest is
       paper; mid-tones and all colour are gone;
    4. ink = max(outline, wash), laid over warm paper.
    """
    import cv2

    image = _check(image_rgb_uint8)
    smooth = cv2.bilateralFilter(image, d=5, sigmaColor=30, sigmaSpace=3)
    lightness = cv2.cvtColor(smooth, cv2.COLOR_RGB2LAB)[..., 0].astype(np.float32) / 255.0

    fine = cv2.GaussianBlur(lightness, (0, 0), 1.0)
    coarse = cv2.GaussianBlur(lightness, (0, 0), 1.6)
    dog = fine - coarse  # negative on the dark side of an edge
    outline = np.clip((-dog - 0.012) / 0.02, 0.0, 1.0)

    wash_level = cv2.GaussianBlur(lightness, (0, 0), 1.2)
    wash = 0.55 * np.clip((0.36 - wash_level) / 0.06, 0.0, 1.0)

    amount = np.maximum(outline, wash)[..., None]
    return _to_uint8(PAPER * (1.0 - amount) + INK * amount)


PAINTERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"colour": colour, "oil": oil, "ink": ink}


def get(name: str) -> Callable[[np.ndarray], np.ndarray]:
    """The painter called ``name``; a ValueError names the known ones."""
    try:
        return PAINTERS[name]
    except KeyError:
        raise ValueError(f"unknown painter '{name}'; known: {', '.join(PAINTERS)}") from None
