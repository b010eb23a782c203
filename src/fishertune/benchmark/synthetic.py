"""Synthetic multi-domain street scenes: one layout generator, many appearances (``fishertune synth``).

Layout of ``generate(out_dir, ...)``::

    DIR/<domain>/images/<id>.png    RGB
    DIR/<domain>/labels/<id>.png    Cityscapes train ids (0-18, 255 = ignore; the generator emits none)
    DIR/synth.json                  the arguments, so a caller can tell whether a cached folder matches

``<id>`` is the zero-padded scene index (``00000``, ``00001``, ...). Scenes come from three disjoint
layout streams, so no layout is both trained on and tested on:

- ``source`` (training) draws the *train* scenes;
- ``source_val`` draws the *val* scenes in the source style, for choosing hyper-parameters;
- every target domain draws the same *test* scenes: scene ``i`` has the same label map in ``photo``,
  ``fog``, ``night``, ``rain``, ``snow`` and ``shift``, which differ in appearance only.

Scene ``i`` of stream ``s`` is fully determined by ``(seed, s, i)`` and the size, and its appearance in a
domain by ``(seed, s, i, domain)``: the same arguments write identical bytes.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from fishertune.atomic import write_json
from fishertune.benchmark import styles
from fishertune.benchmark.scenes import SceneLayout, make_layout
from fishertune.data.image_io import write_png
from fishertune.errors import FisherTuneError
from fishertune.registry import unknown_name

SCENE_STREAMS = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class Domain:
    style: Callable[[SceneLayout, np.random.Generator], np.ndarray]
    scenes: str
    """which layout stream the domain draws: "train", "val" or "test"."""
    description: str


DOMAINS: dict[str, Domain] = {
    "source": Domain(styles.source_style, "train", "flat, game-like colours: the training domain"),
    "source_val": Domain(styles.source_style, "val",
                         "the source style on held-out scenes, for choosing hyper-parameters"),
    "photo": Domain(styles.photo_style, "test",
                    "photo textures (scikit-image samples), sun and clouds"),
    "fog": Domain(styles.fog_style, "test", "photo look in fog that thickens with depth"),
    "night": Domain(styles.night_style, "test", "dark, lamp light and glow, sensor noise"),
    "rain": Domain(styles.rain_style, "test", "overcast, wet road, haze, rain streaks, blur"),
    "snow": Domain(styles.snow_style, "test", "snow cover with tyre tracks, white sky, flakes"),
    "shift": Domain(styles.shift_style, "test",
                    "another camera: hue rotation, contrast, gamma, blur, aberration, vignetting"),
}
TARGET_DOMAINS = tuple(name for name, domain in DOMAINS.items() if domain.scenes == "test")


def _size(size: int | Sequence[int]) -> tuple[int, int]:
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    if height < 16 or width < 16:
        raise FisherTuneError(f"synthetic image size must be at least 16 pixels, got {height}x{width}")
    return int(height), int(width)


def check_domains(domains: Sequence[str]) -> list[str]:
    """The domain names, checked against ``DOMAINS`` (an InputError names the nearest valid one)."""
    for name in domains:
        if name not in DOMAINS:
            raise unknown_name("synthetic domain", name, DOMAINS)
    return list(domains)


def scene_layout(index: int, scenes: str = "train", size: int | Sequence[int] = 128,
                 seed: int = 0) -> SceneLayout:
    """The geometry (labels, depth, ...) of scene ``index`` of a layout stream."""
    height, width = _size(size)
    return make_layout(height, width, np.random.default_rng([seed, SCENE_STREAMS[scenes], index]))


def render_layout(layout: SceneLayout, domain: str, index: int,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(image [H,W,3] uint8, label [H,W] uint8) of a layout in a domain's appearance."""
    style = DOMAINS[check_domains([domain])[0]]
    stream = SCENE_STREAMS[style.scenes]
    rng = np.random.default_rng([seed, stream, index, zlib.crc32(domain.encode())])
    image = style.style(layout, rng)
    return (np.clip(image * 255 + 0.5, 0, 255)).astype(np.uint8), layout.label.copy()


def render_scene(index: int, domain: str = "source", size: int | Sequence[int] = 128,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Scene ``index`` of a domain in memory, exactly as ``generate`` writes it: (image, label) uint8."""
    scenes = DOMAINS[check_domains([domain])[0]].scenes
    return render_layout(scene_layout(index, scenes, size, seed), domain, index, seed)


def generate(out_dir: str | Path, domains: Sequence[str] | None = None, n: int = 100,
             size: int | Sequence[int] = 128, seed: int = 0, progress: bool = True) -> dict[str, Path]:
    """Write ``n`` scenes per domain (all of ``DOMAINS`` by default) under ``out_dir``; returns
    {domain: folder}. Each layout is drawn once and rendered in every requested domain that uses its
    stream. Files are written atomically, so an interrupted run leaves no half-written PNG."""
    domains = check_domains(list(DOMAINS) if domains is None else list(domains))
    if n < 1:
        raise FisherTuneError(f"the number of synthetic images must be at least 1, got {n}")
    height, width = _size(size)
    out_dir = Path(out_dir)
    folders = {domain: out_dir / domain for domain in domains}
    by_stream: dict[str, list[str]] = {}
    for domain in domains:
        by_stream.setdefault(DOMAINS[domain].scenes, []).append(domain)
    bar = tqdm(total=n * len(domains), desc="synth", unit="img", disable=not progress)
    for scenes, members in by_stream.items():
        for index in range(n):
            layout = scene_layout(index, scenes, (height, width), seed)
            for domain in members:
                image, label = render_layout(layout, domain, index, seed)
                write_png(folders[domain] / "images" / f"{index:05d}.png", image)
                write_png(folders[domain] / "labels" / f"{index:05d}.png", label)
                bar.update()
    bar.close()
    manifest = {"domains": domains, "n": n, "size": [height, width], "seed": seed}
    write_json(out_dir / "synth.json", manifest)
    return folders
