"""What to put inside the region: noise, blur, black or an inpainted fill, as float (H, W, C) arrays.

Each function returns new values for the whole array it is given; the caller keeps only the region's
pixels, so everything outside stays bit-identical by construction.
"""
from __future__ import annotations

import numpy as np


def noise(img: np.ndarray, region: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """img + N(0, sigma²) inside the region (sigma in pixel units); draws one value per region sample."""
    out = img.copy()
    out[region] += rng.normal(0.0, sigma, size=(int(region.sum()), img.shape[2]))
    return out


def black(img: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Zero inside the region."""
    out = img.copy()
    out[region] = 0.0
    return out


def _box1d(a: np.ndarray, r: int, axis: int) -> np.ndarray:
    # Moving average of width 2r+1 from a cumulative sum: O(N) whatever the radius; edges replicate.
    pad = [(0, 0)] * a.ndim
    pad[axis] = (r + 1, r)
    c = np.cumsum(np.pad(a, pad, mode="edge"), axis=axis, dtype=np.float64)
    n = a.shape[axis]
    hi = [slice(None)] * a.ndim
    lo = [slice(None)] * a.ndim
    hi[axis] = slice(2 * r + 1, 2 * r + 1 + n)
    lo[axis] = slice(0, n)
    return ((c[tuple(hi)] - c[tuple(lo)]) / (2 * r + 1)).astype(a.dtype, copy=False)


def blur(img: np.ndarray, radius: int) -> np.ndarray:
    """Three box-blur passes per axis (close to a Gaussian of sigma ≈ radius)."""
    out = img
    for _ in range(3):
        out = _box1d(_box1d(out, radius, 0), radius, 1)
    return out


def _jacobi(v: np.ndarray, hole: np.ndarray, iters: int) -> np.ndarray:
    # Relax the hole towards the solution of Laplace's equation with the known pixels as boundary.
    # Only hole pixels are touched (gather/scatter by flat index), so the cost follows the hole's
    # size, not the crop's; a neighbour off the image is the pixel itself (zero-flux border).
    if iters == 0 or not hole.any():
        return v
    h, w, c = v.shape
    ys, xs = np.nonzero(hole)
    idx = ys * w + xs
    nbs = (np.maximum(ys - 1, 0) * w + xs, np.minimum(ys + 1, h - 1) * w + xs,
           ys * w + np.maximum(xs - 1, 0), ys * w + np.minimum(xs + 1, w - 1))
    flat = v.reshape(h * w, c).copy()
    for _ in range(iters):
        flat[idx] = 0.25 * (flat[nbs[0]] + flat[nbs[1]] + flat[nbs[2]] + flat[nbs[3]])
    return flat.reshape(h, w, c)


def inpaint(img: np.ndarray, hole: np.ndarray, iters: int = 8) -> np.ndarray:
    """Fill the hole smoothly from its surroundings (push-pull pyramid, Jacobi-relaxed at every level).

    Pull: average the known pixels over 2x2 cells level by level until every cell sees one. Push:
    from the coarsest level down, unknown cells take the upsampled coarser estimate, then `iters`
    Jacobi steps smooth it. This is a cheap multigrid solve of the harmonic fill, so a blob of any
    size vanishes in a fixed number of vectorised steps per level.
    """
    if hole.all():
        # Nothing known to fill from: the flat mean is the only neutral choice.
        return np.full_like(img, img.mean())
    known = (~hole).astype(img.dtype)
    levels = [(img * known[..., None], known)]
    while (levels[-1][1] == 0).any():
        vw, w = levels[-1]
        h2, w2 = -(-w.shape[0] // 2) * 2, -(-w.shape[1] // 2) * 2
        vw = np.pad(vw, ((0, h2 - w.shape[0]), (0, w2 - w.shape[1]), (0, 0)))
        w = np.pad(w, ((0, h2 - w.shape[0]), (0, w2 - w.shape[1])))
        levels.append((vw[0::2, 0::2] + vw[1::2, 0::2] + vw[0::2, 1::2] + vw[1::2, 1::2],
                       w[0::2, 0::2] + w[1::2, 0::2] + w[0::2, 1::2] + w[1::2, 1::2]))
    est = None
    for vw, w in reversed(levels):
        have = w > 0
        mean = vw / np.maximum(w, 1e-12)[..., None]
        if est is None:
            est = mean
            continue
        up = np.repeat(np.repeat(est, 2, axis=0), 2, axis=1)[: w.shape[0], : w.shape[1]]
        est = _jacobi(np.where(have[..., None], mean, up), ~have, iters)
    return est
