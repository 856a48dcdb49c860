"""Corruption throughput: images/s per mode at 224² and 512² (arrays), and through PNG bytes.

Images are a textured gradient with 1-3 Gaussian lesions and their exact masks, like the embedded
data. Prints one line per (size, mode); the last line is one JSON object whose `images_per_s_224` and
`images_per_s_512` are for the default mode (CorruptionConfig().mode). Rates are per wall second;
the `cpu_*` figures are per CPU second of this process, steadier on a shared machine.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from medpo_ray.config import CorruptionConfig
from medpo_ray.corruption import MODES, control_corruption, corrupt_image, corrupt_png, encode_png


def make_images(n: int, size: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """n (uint8 image, bool lesion mask) pairs with 1-3 lesions of radius ~2-6% of the side."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = []
    for _ in range(n):
        img = 60 + 80 * xx / size + 40 * yy / size + rng.normal(0, 6, (size, size))
        mask = np.zeros((size, size), dtype=bool)
        for _ in range(int(rng.integers(1, 4))):
            cy, cx = rng.uniform(0.15, 0.85, 2) * size
            r = rng.uniform(0.02, 0.06) * size
            d2 = (yy - cy) ** 2 + (xx - cx) ** 2
            img += 90 * np.exp(-d2 / (2 * (r / 2) ** 2))
            mask |= d2 <= r * r
        out.append((np.clip(img, 0, 255).astype(np.uint8), mask))
    return out


CPU_RATES: dict[str, float] = {}


def rate(fn, items, min_seconds: float, name: str) -> float:
    """Images per wall second of fn over items, repeated until min_seconds have passed."""
    done, t0, c0 = 0, time.perf_counter(), time.process_time()
    while True:
        for i, item in enumerate(items):
            fn(i, *item)
        done += len(items)
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds:
            CPU_RATES[name] = done / max(time.process_time() - c0, 1e-9)
            return done / elapsed


def main() -> None:
    """Run the benchmark and print the figures."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=32, help="distinct images per size")
    ap.add_argument("--seconds", type=float, default=1.5, help="minimum timing per measurement")
    args = ap.parse_args()
    cfg = CorruptionConfig()
    results: dict[str, float] = {}
    for size in (224, 512):
        images = make_images(args.images, size)
        for mode in MODES:
            results[f"{mode}_{size}"] = r = rate(
                lambda i, im, m, mode=mode: corrupt_image(im, mask=m, mode=mode, key=f"r{i}", cfg=cfg),
                images, args.seconds, f"{mode}_{size}")
            print(f"{size}x{size} {mode:8s} {r:8.1f} images/s, {CPU_RATES[f'{mode}_{size}']:8.1f} per CPU s "
                  "(array in, array out)", flush=True)
        whole = rate(lambda i, im, m: corrupt_image(im, key=f"r{i}", cfg=cfg), images, args.seconds, "whole")
        results[f"whole_noise_{size}"] = whole
        print(f"{size}x{size} whole-image noise fallback {whole:8.1f} images/s", flush=True)
        ctrl = rate(lambda i, im, m: control_corruption(im, mask=m, key=f"r{i}", cfg=cfg), images, args.seconds,
                    "control")
        results[f"control_{cfg.mode}_{size}"] = ctrl
        print(f"{size}x{size} control ({cfg.mode}) {ctrl:8.1f} images/s", flush=True)
        encoded = [(encode_png(im), encode_png(m.astype(np.uint8) * 255)) for im, m in images]
        png = rate(lambda i, im, m: corrupt_png(im, mask_png=m, key=f"r{i}", cfg=cfg), encoded, args.seconds,
                   "png")
        results[f"png_{cfg.mode}_{size}"] = png
        print(f"{size}x{size} {cfg.mode} via PNG bytes (decode+corrupt+encode) {png:8.1f} images/s", flush=True)
    print(json.dumps({"images_per_s_224": round(results[f"{cfg.mode}_224"], 1),
                      "images_per_s_512": round(results[f"{cfg.mode}_512"], 1),
                      "cpu_images_per_s_224": round(CPU_RATES[f"{cfg.mode}_224"], 1),
                      "cpu_images_per_s_512": round(CPU_RATES[f"{cfg.mode}_512"], 1),
                      "default_mode": cfg.mode, **{k: round(v, 1) for k, v in results.items()}}))


if __name__ == "__main__":
    main()
