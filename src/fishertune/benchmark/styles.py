"""Appearance domains for procedural street scenes: how a ``SceneLayout`` becomes an RGB image.

Every style only colours pixels; it never moves a boundary, so all domains share the label maps. The
source is flat and game-like. The targets start from a photo-like rendering (scikit-image's bundled
sample photographs as surface textures, sun shading, clouds) and add what real DGSS shifts add: fog
that thickens with depth (Koschmieder: I = J·t + A·(1 − t), t = exp(−β·depth)), night with lamps,
glow and sensor noise, rain streaks, snow cover and flakes, and strong colour and camera changes.
Each style takes a ``numpy.random.Generator`` and returns float32 [H, W, 3] in [0, 1].
"""

from __future__ import annotations

from functools import cache

import numpy as np
import skimage.data
from scipy import ndimage

from fishertune.benchmark.scenes import (
    BICYCLE,
    BUILDING,
    BUS,
    CAR,
    DARK,
    FACING_CAMERA,
    FACING_GROUND,
    FENCE,
    GLASS,
    LAMP,
    LIGHT,
    MAIN,
    MOTORCYCLE,
    NUM_PARTS,
    PAINT,
    PERSON,
    POLE,
    RIDER,
    ROAD,
    SIDEWALK,
    SIGN,
    SKIN,
    SKY,
    TERRAIN,
    TRUCK,
    VEGETATION,
    WALL,
    SceneLayout,
)

# classes whose main colour is picked per instance from a list (cars of many colours, clothing, ...)
_VARIED = {
    CAR: [(0.75, 0.1, 0.1), (0.1, 0.2, 0.6), (0.85, 0.85, 0.85), (0.12, 0.12, 0.14), (0.55, 0.57, 0.6),
          (0.9, 0.75, 0.15), (0.15, 0.4, 0.2), (0.45, 0.2, 0.1)],
    TRUCK: [(0.85, 0.85, 0.8), (0.2, 0.35, 0.6), (0.7, 0.2, 0.15), (0.4, 0.45, 0.35)],
    BUS: [(0.85, 0.2, 0.15), (0.2, 0.45, 0.75), (0.9, 0.8, 0.3), (0.9, 0.9, 0.9)],
    PERSON: [(0.7, 0.15, 0.15), (0.15, 0.3, 0.6), (0.25, 0.25, 0.25), (0.8, 0.7, 0.3), (0.3, 0.55, 0.3),
             (0.85, 0.85, 0.85)],
    BUILDING: [(0.78, 0.7, 0.55), (0.7, 0.45, 0.35), (0.6, 0.62, 0.66), (0.85, 0.8, 0.72), (0.5, 0.4, 0.35),
               (0.66, 0.7, 0.6)],
    SIGN: [(0.8, 0.1, 0.1), (0.1, 0.3, 0.75), (0.95, 0.8, 0.1)],
    MOTORCYCLE: [(0.1, 0.1, 0.1), (0.7, 0.1, 0.1), (0.2, 0.3, 0.7)],
    BICYCLE: [(0.2, 0.2, 0.2), (0.6, 0.1, 0.1), (0.1, 0.5, 0.6)],
}
_VARIED[RIDER] = _VARIED[PERSON]

# flat colour of each (class, part) in the source domain
_SOURCE = np.zeros((19, NUM_PARTS, 3), np.float32)
_SOURCE_MAIN = {ROAD: (0.36, 0.34, 0.38), SIDEWALK: (0.78, 0.68, 0.66), WALL: (0.62, 0.6, 0.48),
                FENCE: (0.6, 0.48, 0.32), POLE: (0.48, 0.48, 0.5), LIGHT: (0.18, 0.18, 0.14),
                VEGETATION: (0.2, 0.58, 0.15), TERRAIN: (0.58, 0.74, 0.3), SKY: (0.45, 0.7, 0.98)}
for _cls, _colour in _SOURCE_MAIN.items():
    _SOURCE[_cls, :] = _colour
_SOURCE[:, GLASS] = (0.2, 0.28, 0.4)
_SOURCE[:, DARK] = (0.1, 0.1, 0.12)
_SOURCE[:, PAINT] = (0.95, 0.95, 0.92)
_SOURCE[:, LAMP] = (1.0, 0.95, 0.75)
_SOURCE[:, SKIN] = (0.92, 0.72, 0.58)
_SOURCE[(CAR, TRUCK, BUS, MOTORCYCLE), LAMP] = (0.95, 0.1, 0.1)
_SOURCE[(PERSON, RIDER), DARK] = (0.15, 0.15, 0.3)
_SOURCE[VEGETATION, DARK] = (0.42, 0.28, 0.15)
_SOURCE[SIDEWALK, DARK] = (0.55, 0.52, 0.5)
_SOURCE[FENCE, DARK] = (0.3, 0.25, 0.2)
_SOURCE[LIGHT, DARK] = (0.08, 0.08, 0.08)
_TRAFFIC_LAMPS = np.array([(1.0, 0.1, 0.05), (1.0, 0.7, 0.05), (0.1, 1.0, 0.3)], np.float32)


def _base_colours(layout: SceneLayout, table: np.ndarray, palettes: dict) -> np.ndarray:
    """Per-pixel colour from a (class, part) table, with per-instance colours for varied classes."""
    rgb = table[layout.label, layout.part]
    for cls, colours in palettes.items():
        mask = (layout.label == cls) & (layout.part == MAIN)
        if mask.any():
            choice = np.minimum((layout.tint[mask] * len(colours)).astype(int), len(colours) - 1)
            rgb[mask] = np.asarray(colours, np.float32)[choice]
    lamps = (layout.label == LIGHT) & (layout.part == LAMP)
    rgb[lamps] = _TRAFFIC_LAMPS[np.minimum((layout.tint[lamps] * 3).astype(int), 2)]
    return rgb


def source_style(layout: SceneLayout, rng: np.random.Generator) -> np.ndarray:
    """Flat, saturated, game-like colours with simple per-face lighting."""
    rgb = _base_colours(layout, _SOURCE, _VARIED)
    shade = np.array([1.0, 0.82, 0.95, 0.9, 1.0], np.float32)[layout.facing]
    sky = layout.label == SKY
    height = layout.label.shape[0]
    rgb[sky] *= (0.85 + 0.25 * np.arange(height)[:, None] / height)[np.nonzero(sky)[0]][:, :1]
    return np.clip(rgb * shade[..., None] * rng.uniform(0.9, 1.1), 0, 1)


# ------------------------------------------------------------------------------------------- photo


@cache
def _texture(name: str) -> np.ndarray:
    """A bundled scikit-image sample photo as a grey texture with mean 1 (no download needed)."""
    image = getattr(skimage.data, name)().astype(np.float32)
    if image.ndim == 3:
        image = image[..., :3].mean(axis=2)
    return image / image.mean()


# class -> (texture, pixels of texture per metre, contrast)
_PHOTO_TEXTURES = {ROAD: ("gravel", 90, 0.45), SIDEWALK: ("brick", 70, 0.5), BUILDING: ("brick", 35, 0.55),
                   WALL: ("gravel", 60, 0.5), FENCE: ("grass", 120, 0.35), VEGETATION: ("grass", 110, 0.8),
                   TERRAIN: ("grass", 80, 0.6), POLE: ("gravel", 200, 0.15), PERSON: ("grass", 200, 0.25),
                   RIDER: ("grass", 200, 0.25), CAR: ("gravel", 250, 0.08), TRUCK: ("gravel", 150, 0.15),
                   BUS: ("gravel", 150, 0.12)}

_PHOTO = _SOURCE.copy()
for _cls, _colour in {ROAD: (0.27, 0.27, 0.28), SIDEWALK: (0.55, 0.52, 0.5), WALL: (0.55, 0.52, 0.46),
                      FENCE: (0.42, 0.4, 0.36), POLE: (0.4, 0.41, 0.42), VEGETATION: (0.16, 0.26, 0.09),
                      TERRAIN: (0.42, 0.4, 0.26)}.items():
    _PHOTO[_cls, MAIN] = _colour
_PHOTO[ROAD, PAINT] = (0.8, 0.8, 0.78)
_PHOTO[:, GLASS] = (0.12, 0.15, 0.18)
_PHOTO[VEGETATION, DARK] = (0.25, 0.2, 0.15)


def _muted(palettes: dict, amount: float) -> dict:
    """Palettes pulled towards grey, as real paint looks under daylight next to game colours."""
    return {cls: [tuple(np.asarray(c) * (1 - amount) + np.mean(c) * amount) for c in colours]
            for cls, colours in palettes.items()}


_PHOTO_VARIED = _muted(_VARIED, 0.35)


def _sky(layout: SceneLayout, rng: np.random.Generator, top, horizon, clouds: float) -> np.ndarray:
    """A vertical gradient with smooth random clouds, [H, W, 3]."""
    height, width = layout.label.shape
    t = (np.arange(height, dtype=np.float32) / height)[:, None, None] ** 0.7
    sky = np.asarray(top, np.float32) * (1 - t) + np.asarray(horizon, np.float32) * t
    coarse = rng.standard_normal((height // 8 + 2, width // 8 + 2)).astype(np.float32)
    noise = ndimage.zoom(ndimage.gaussian_filter(coarse, 1.2), 8, order=1)[:height, :width]
    noise = (noise - noise.mean()) / (noise.std() + 1e-6)
    cover = np.clip(noise - rng.uniform(-0.5, 1.0), 0, 1)[..., None] * clouds
    return sky * (1 - cover) + 0.92 * cover


def photo_style(layout: SceneLayout, rng: np.random.Generator) -> np.ndarray:
    """Daylight with textured surfaces, sun shading, soft shadows at object feet and a cloudy sky."""
    rgb = _base_colours(layout, _PHOTO, _PHOTO_VARIED)
    texture = np.ones(layout.label.shape, np.float32)
    offset = rng.integers(0, 512, size=2)
    for cls, (name, per_metre, contrast) in _PHOTO_TEXTURES.items():
        mask = layout.label == cls
        if not mask.any():
            continue
        tex = _texture(name)
        rows = (layout.v[mask] * per_metre + offset[0]).astype(np.int64) % tex.shape[0]
        cols = (layout.u[mask] * per_metre + offset[1]).astype(np.int64) % tex.shape[1]
        texture[mask] = 1 + contrast * (tex[rows, cols] - 1)
    sun = rng.uniform(0.55, 1.0)
    shade = np.array([0.95, 0.6 + 0.4 * sun, 1.0 - 0.4 * sun, 0.85, 1.0], np.float32)[layout.facing]
    objects = layout.facing == FACING_CAMERA
    shade = np.where(objects, shade * (0.8 + 0.25 * np.clip(layout.v / 2.5, 0, 1)), shade)
    rgb = rgb * (texture * shade)[..., None]
    sky = layout.label == SKY
    rgb[sky] = _sky(layout, rng, (0.3, 0.5, 0.8), (0.75, 0.82, 0.9), rng.uniform(0.2, 0.8))[sky]
    rgb = rgb * rng.uniform(0.85, 1.15) * rng.uniform(0.92, 1.08, size=3).astype(np.float32)
    return np.clip(ndimage.gaussian_filter(rgb, (0.4, 0.4, 0)), 0, 1)


# ---------------------------------------------------------------------------------------- weather


def _haze(rgb: np.ndarray, depth: np.ndarray, beta: float, airlight) -> np.ndarray:
    """Koschmieder's law I = J·t + A·(1 − t), t = exp(−β·depth); the sky (infinite depth) becomes A."""
    t = np.exp(-beta * np.nan_to_num(depth, posinf=1e4))[..., None]
    return rgb * t + np.asarray(airlight, np.float32) * (1 - t)


def _noise(rgb: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    return rgb + rng.normal(0, sigma, rgb.shape).astype(np.float32)


def fog_style(layout: SceneLayout, rng: np.random.Generator) -> np.ndarray:
    """Photo look under fog whose density grows with depth (visibility about 40-120 m)."""
    rgb = photo_style(layout, rng)
    airlight = rng.uniform(0.72, 0.88) * np.array([0.97, 0.99, 1.02], np.float32)
    return np.clip(_noise(_haze(rgb, layout.depth, rng.uniform(0.03, 0.08), airlight), rng, 0.01), 0, 1)


def _glow(emitters: np.ndarray, sigma: float) -> np.ndarray:
    return ndimage.gaussian_filter(emitters, (sigma, sigma, 0))


def night_style(layout: SceneLayout, rng: np.random.Generator) -> np.ndarray:
    """Dark blue ambient light, pools of lamp light on the ground, lit windows, glowing lamps and
    tail lights, and the sensor noise of a high-gain exposure."""
    albedo = photo_style(layout, rng)
    rgb = albedo * (rng.uniform(0.1, 0.2) * np.array([0.75, 0.85, 1.2], np.float32))
    light = np.zeros(layout.label.shape, np.float32)
    ground = layout.facing == FACING_GROUND
    for x, _height, z in layout.lamps:
        light += np.where(ground, np.exp(-((layout.u - x) ** 2 + (layout.v - z) ** 2) / (2 * 3.5**2)), 0)
    rgb += albedo * light[..., None] * np.array([1.0, 0.82, 0.55], np.float32) * rng.uniform(0.5, 0.9)
    windows = (layout.label == BUILDING) & (layout.part == GLASS)
    cell = np.floor(layout.u / 3.2) * 12.9898 + np.floor(layout.v / 3.1) * 78.233 + rng.uniform(0, 100)
    lit = windows & ((np.sin(cell) * 43758.5453) % 1.0 < 0.3)
    rgb[lit] = (0.95, 0.75, 0.4)
    emitters = np.zeros_like(rgb)
    lamps = layout.part == LAMP
    emitters[lamps] = _base_colours(layout, _SOURCE, {})[lamps] * 1.5
    rgb[lamps] = np.clip(emitters[lamps], 0, 1)
    width = layout.label.shape[1]
    rgb += _glow(emitters, width / 60) * 2.5 + _glow(emitters, width / 20) * 1.5
    rgb[layout.label == SKY] += np.array([0.02, 0.03, 0.07], np.float32)
    gain = rng.uniform(0.02, 0.04)
    noisy = _noise(rgb, rng, gain) + rng.normal(0, gain * 0.5, rgb.shape[:2] + (1,)).astype(np.float32)
    return np.clip(noisy, 0, 1)


def _streaks(shape, rng: np.random.Generator, density: float, length: int, angle: float) -> np.ndarray:
    """Bright line segments: sparse random impulses smeared along a direction (motion blur)."""
    drops = (rng.random(shape) < density).astype(np.float32) * rng.uniform(0.5, 1.0, shape).astype(np.float32)
    kernel = np.zeros((length, length), np.float32)
    for k in range(length):
        t = k - (length - 1) / 2
        kernel[int(round((length - 1) / 2 + t * np.cos(angle))),
               int(round((length - 1) / 2 + t * np.sin(angle)))] = 1
    return ndimage.convolve(drops, kernel / kernel.sum() * 3, mode="constant")


def rain_style(layout: SceneLayout, rng: np.random.Generator) -> np.ndarray:
    """Overcast, wet and blurred: dark glossy road, grey haze, falling rain streaks."""
    rgb = photo_style(layout, rng)
    grey = rgb.mean(axis=2, keepdims=True)
    rgb = 0.72 * (0.55 * rgb + 0.45 * grey)
    road = layout.label == ROAD
    sheen = ndimage.gaussian_filter(rng.random(layout.label.shape).astype(np.float32), 1.5)
    sheen = (sheen - sheen.min()) / (np.ptp(sheen) + 1e-6)
    rgb[road] = rgb[road] * 0.7 + 0.1 * sheen[road, None]
    rgb = _haze(rgb, layout.depth, rng.uniform(0.01, 0.025), (0.55, 0.57, 0.6))
    rgb = ndimage.gaussian_filter(rgb, (0.8, 0.8, 0))
    width = layout.label.shape[1]
    streaks = _streaks(layout.label.shape, rng, rng.uniform(0.004, 0.01), max(5, width // 14),
                       rng.uniform(-0.35, 0.35))
    return np.clip(_noise(rgb + 0.35 * streaks[..., None], rng, 0.015), 0, 1)


def snow_style(layout: SceneLayout, rng: np.random.Generator) -> np.ndarray:
    """Snow on the ground (with dark tyre tracks on the road), frosted vegetation, a white overcast sky,
    haze and falling flakes."""
    rgb = photo_style(layout, rng)
    snow = np.array([0.9, 0.92, 0.96], np.float32)
    blotch = ndimage.gaussian_filter(rng.random(layout.label.shape).astype(np.float32), 2)
    blotch = (blotch - blotch.min()) / (np.ptp(blotch) + 1e-6)
    cover = np.zeros(layout.label.shape, np.float32)
    cover[np.isin(layout.label, (SIDEWALK, TERRAIN))] = 0.85
    road = layout.label == ROAD
    tracks = np.abs((layout.u % 1.65) - 0.82) < 0.18
    cover[road] = np.where(tracks[road], 0.15, 0.75)
    cover[layout.label == VEGETATION] = 0.45
    cover = np.clip(cover + 0.4 * (blotch - 0.5), 0, 1)[..., None]
    rgb = rgb * (1 - cover) + snow * cover * rng.uniform(0.85, 1.0)
    rgb[layout.label == SKY] = (0.8, 0.82, 0.85)
    rgb = 0.7 * rgb + 0.3 * rgb.mean(axis=2, keepdims=True)
    rgb = _haze(rgb, layout.depth, rng.uniform(0.015, 0.035), (0.82, 0.84, 0.88))
    flakes = (rng.random(layout.label.shape) < rng.uniform(0.005, 0.015)).astype(np.float32)
    flakes = np.clip(ndimage.gaussian_filter(flakes, 0.7) * 4, 0, 1)[..., None]
    return np.clip(_noise(rgb * (1 - flakes) + 0.97 * flakes, rng, 0.01), 0, 1)


def _rotate_hue(rgb: np.ndarray, angle: float) -> np.ndarray:
    """Rotate the chroma plane of YIQ by ``angle`` radians (luma kept)."""
    to_yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32)
    c, s = np.cos(angle), np.sin(angle)
    rotation = np.array([[1, 0, 0], [0, c, -s], [0, s, c]], np.float32)
    matrix = np.linalg.inv(to_yiq) @ rotation @ to_yiq
    return rgb @ matrix.T.astype(np.float32)


def shift_style(layout: SceneLayout, rng: np.random.Generator) -> np.ndarray:
    """A different camera and colour pipeline: hue rotation, saturation and contrast changes, gamma,
    defocus blur, chromatic aberration, vignetting and noise."""
    rgb = _rotate_hue(photo_style(layout, rng), rng.uniform(np.pi / 3, 5 * np.pi / 3))
    grey = rgb.mean(axis=2, keepdims=True)
    rgb = grey + (rgb - grey) * rng.uniform(1.2, 2.0)
    rgb = (rgb - 0.5) * rng.uniform(0.55, 1.5) + 0.5 + rng.uniform(-0.1, 0.1)
    rgb = np.clip(rgb, 0, 1) ** rng.uniform(0.6, 1.6)
    rgb = ndimage.gaussian_filter(rgb, (rng.uniform(0.6, 1.2), rng.uniform(0.6, 1.2), 0))
    shift = int(rng.integers(1, 3))
    rgb[..., 0] = np.roll(rgb[..., 0], shift, axis=1)
    rgb[..., 2] = np.roll(rgb[..., 2], -shift, axis=1)
    height, width = layout.label.shape
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    radius2 = ((yy - height / 2) / height * 2) ** 2 + ((xx - width / 2) / width * 2) ** 2
    rgb = rgb * (1 - rng.uniform(0.25, 0.5) * radius2 / 2)[..., None]
    return np.clip(_noise(rgb, rng, 0.02), 0, 1)
