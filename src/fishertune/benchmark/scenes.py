"""The geometry of a procedural street scene: labels, depth and surface attributes, before any colour.

A pinhole camera at height ``cam_h`` looks down a road that may curve. A world point at lateral offset
``X`` from the road centre line, height ``Y`` and depth ``z`` projects to

    x = x_v + f · (X + c·z²) / z,        y = y_h + f · (cam_h − Y) / z,

with vanishing point (x_v, y_h), focal length f (pixels) and curvature c. Every layer is ray-cast per
pixel (the ground plane) or per column (vertical planes: façades, walls, fences, hedges), and objects
(vehicles, people, poles, trees) are upright billboards drawn far to near (painter's algorithm) with a
depth test, so nearer things occlude farther ones. The result is the same for every appearance domain:
the label map, the depth used by fog, and the attributes a style needs to colour a pixel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# train ids used by the generator (see fishertune.data.labels.CLASS_NAMES)
ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY = range(11)
PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE = range(11, 19)

# surface parts: how a style colours a pixel of a given class
MAIN, GLASS, DARK, PAINT, LAMP, SKIN = range(6)
NUM_PARTS = 6

# surface orientation, for shading
FACING_GROUND, FACING_RIGHT, FACING_LEFT, FACING_CAMERA, FACING_NONE = range(5)

GROUND_MAX_DEPTH = 400.0


@dataclass
class SceneLayout:
    """Per-pixel scene attributes ([H, W] each) plus the world positions of street lamps.

    ``u, v`` are surface coordinates in metres (ground: lateral offset and depth; façades: distance along
    and height; objects: offset from their centre and height), so textures follow the perspective.
    ``tint`` in [0, 1) is drawn once per object or façade block and picks its colour variant.
    """

    label: np.ndarray
    depth: np.ndarray
    part: np.ndarray
    tint: np.ndarray
    u: np.ndarray
    v: np.ndarray
    facing: np.ndarray
    lamps: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32))
    """[K, 3] street-lamp heads as (X, height, z) in road coordinates, for night lighting."""


@dataclass
class Camera:
    height: int
    width: int
    focal: float
    horizon: float
    vp_x: float
    cam_h: float
    curve: float

    def screen(self, x_road: float, z: float) -> tuple[float, float, float]:
        """(centre x, ground y, pixels per metre) of an upright billboard standing at (x_road, z)."""
        scale = self.focal / z
        return (self.vp_x + scale * (x_road + self.curve * z * z),
                self.horizon + scale * self.cam_h, scale)


class Canvas:
    """The z-buffered scene being drawn: a pixel takes a surface only when that surface is nearer."""

    def __init__(self, height: int, width: int):
        shape = (height, width)
        self.label = np.full(shape, SKY, np.uint8)
        self.depth = np.full(shape, np.inf, np.float32)
        self.part = np.full(shape, MAIN, np.uint8)
        self.tint = np.zeros(shape, np.float32)
        self.u = np.zeros(shape, np.float32)
        self.v = np.zeros(shape, np.float32)
        self.facing = np.full(shape, FACING_NONE, np.uint8)

    def paint(self, where, mask, depth, label, part, tint, u, v, facing) -> None:
        """Write a surface on ``mask`` within the window ``where`` (a pair of slices) where it is nearer.

        The test is ``depth <= current + 1 mm`` so that later parts of one object (a window on a body)
        overwrite earlier ones at the same depth."""
        mask = mask & (depth <= self.depth[where] + 1e-3)
        for array, value in ((self.label, label), (self.depth, depth), (self.part, part), (self.tint, tint),
                             (self.u, u), (self.v, v), (self.facing, facing)):
            window = array[where]
            window[mask] = value[mask] if isinstance(value, np.ndarray) else value

    def layout(self, lamps: list[tuple[float, float, float]]) -> SceneLayout:
        return SceneLayout(self.label, self.depth, self.part, self.tint, self.u, self.v, self.facing,
                           np.asarray(lamps, np.float32).reshape(-1, 3))


def make_layout(height: int, width: int, rng: np.random.Generator) -> SceneLayout:
    """Draw one random street scene of the given size; all randomness comes from ``rng``."""
    cam = Camera(height, width, focal=width * rng.uniform(0.6, 0.85),
                 horizon=height * rng.uniform(0.36, 0.48), vp_x=width * rng.uniform(0.4, 0.6),
                 cam_h=rng.uniform(1.3, 1.8),
                 curve=rng.choice([0.0, rng.uniform(-3e-3, 3e-3)]))
    road = _Road(rng)
    canvas = Canvas(height, width)
    _draw_ground(canvas, cam, road, rng)
    _draw_side_planes(canvas, cam, road, rng)
    lamps: list[tuple[float, float, float]] = []
    objects = _place_objects(road, rng, lamps)
    for z, draw in sorted(objects, key=lambda item: -item[0]):
        draw(canvas, cam, z)
    return canvas.layout(lamps)


class _Road:
    """Road cross-section in metres, measured from the centre line (negative = left)."""

    def __init__(self, rng: np.random.Generator):
        self.lane_width = rng.uniform(2.9, 3.6)
        lanes_left, lanes_right = int(rng.integers(0, 3)), int(rng.integers(1, 3))
        self.left = -self.lane_width * (lanes_left + rng.uniform(0.3, 0.6))
        self.right = self.lane_width * (lanes_right - rng.uniform(0.3, 0.6))
        self.lane_centres = [self.left + self.lane_width * (k + 0.5)
                             for k in range(int((self.right - self.left) // self.lane_width))]
        self.walk = (rng.uniform(1.5, 4.0), rng.uniform(1.5, 4.0))  # left, right sidewalk widths
        self.setback = (rng.choice([0.0, rng.uniform(1.0, 8.0)]), rng.choice([0.0, rng.uniform(1.0, 8.0)]))
        self.crossing = rng.uniform(8, 30) if rng.random() < 0.35 else None

    def kerb(self, side: int) -> float:
        """Outer edge of the sidewalk on side -1 (left) or +1 (right)."""
        return self.left - self.walk[0] if side < 0 else self.right + self.walk[1]

    def facade(self, side: int) -> float:
        return self.kerb(side) + side * self.setback[0 if side < 0 else 1]


def _pixel_grid(cam: Camera) -> tuple[np.ndarray, np.ndarray]:
    return (np.arange(cam.height, dtype=np.float32)[:, None] + 0.5,
            np.arange(cam.width, dtype=np.float32)[None, :] + 0.5)


def _draw_ground(canvas: Canvas, cam: Camera, road: _Road, rng: np.random.Generator) -> None:
    """Road, lane markings, crossing, sidewalks and terrain on the ground plane, ray-cast per pixel."""
    ys, xs = _pixel_grid(cam)
    below = ys - cam.horizon
    z = np.where(below > 0, cam.focal * cam.cam_h / np.maximum(below, 1e-6), np.inf)
    z = np.broadcast_to(np.minimum(z, GROUND_MAX_DEPTH), (cam.height, cam.width)).astype(np.float32)
    visible = np.broadcast_to(below > 0, z.shape)
    x_road = (xs - cam.vp_x) * z / cam.focal - cam.curve * z * z
    label = np.full(z.shape, TERRAIN, np.uint8)
    label[(x_road >= road.kerb(-1)) & (x_road <= road.kerb(1))] = SIDEWALK
    on_road = (x_road >= road.left) & (x_road <= road.right)
    label[on_road] = ROAD
    part = np.full(z.shape, MAIN, np.uint8)
    dashes = (z % 9.0) < 4.0
    for k in range(1, len(road.lane_centres) + 1):
        boundary = road.left + k * road.lane_width
        if boundary < road.right - 0.5:
            part[on_road & (np.abs(x_road - boundary) < 0.08) & dashes] = PAINT
    for edge in (road.left + 0.3, road.right - 0.3):
        part[on_road & (np.abs(x_road - edge) < 0.08)] = PAINT
    if road.crossing is not None:
        zebra = (z > road.crossing) & (z < road.crossing + 3.0) & ((x_road % 1.0) < 0.5)
        part[on_road & zebra] = PAINT
    part[(label == SIDEWALK) & (np.abs(np.abs(x_road - (road.left + road.right) / 2)
                                       - (road.right - road.left) / 2) < 0.12)] = DARK  # kerb stones
    tint = np.full(z.shape, rng.random(), np.float32)
    canvas.paint((slice(None), slice(None)), visible, z, label, part, tint, x_road, z,
                 np.full(z.shape, FACING_GROUND, np.uint8))


@dataclass
class _Block:
    start: float
    end: float
    label: int
    height: float
    tint: float


def _blocks(rng: np.random.Generator, kinds: list[tuple[int, float]], z0: float, z1: float,
            length: tuple[float, float], heights: dict[int, tuple[float, float]], gap: float) -> list[_Block]:
    """Consecutive segments along a plane; ``kinds`` are (label, weight); label -1 leaves a gap."""
    labels, weights = zip(*kinds)
    weights = np.asarray(weights) / np.sum(weights)
    blocks, z = [], z0
    while z < z1:
        span = rng.uniform(*length)
        chosen = int(rng.choice(labels, p=weights)) if rng.random() >= gap else -1
        if chosen >= 0:
            blocks.append(_Block(z, z + span, chosen, rng.uniform(*heights[chosen]), rng.random()))
        z += span
    return blocks


def _draw_plane(canvas: Canvas, cam: Camera, blocks: list[_Block], offset: float | None,
                across_at: float | None, facing: int) -> None:
    """Vertical plane segments: along the road at lateral ``offset``, or across it at depth ``across_at``.

    Along the road, column x meets the plane X = offset where c·z² − a·z + offset = 0, a = (x − x_v)/f;
    the nearest positive root is the depth seen in that column. Across the road, the depth is constant
    and the position along the plane is the column's lateral offset."""
    if not blocks:
        return
    ys, xs = _pixel_grid(cam)
    a = (xs[0] - cam.vp_x) / cam.focal
    if across_at is None:
        if abs(cam.curve) < 1e-9:
            with np.errstate(divide="ignore"):
                z = np.where(a * offset > 0, offset / np.where(a == 0, np.inf, a), np.inf)
        else:
            disc = a * a - 4 * cam.curve * offset
            root = np.sqrt(np.maximum(disc, 0))
            roots = np.stack([(a - root) / (2 * cam.curve), (a + root) / (2 * cam.curve)])
            roots = np.where((roots > 0.5) & (disc >= 0), roots, np.inf)
            z = roots.min(axis=0)
        along = np.where(np.isfinite(z), z, -1.0)
    else:
        z = np.full(cam.width, across_at, np.float32)
        along = a * across_at - cam.curve * across_at**2
    starts = np.array([b.start for b in blocks])
    index = np.clip(np.searchsorted(starts, along, side="right") - 1, 0, len(blocks) - 1)
    inside = np.isfinite(z) & (along >= starts[index]) & (along < np.array([b.end for b in blocks])[index])
    height = np.array([b.height for b in blocks])[index]
    label = np.array([b.label for b in blocks], np.uint8)[index]
    tint = np.array([b.tint for b in blocks], np.float32)[index]
    # hedges and tree rows get a ragged top; buildings get steps from the tint
    ragged = 1 + 0.15 * np.sin(along * 0.5 + tint * 40) + 0.08 * np.sin(along * 1.3 + tint * 90)
    height = np.where(label == VEGETATION, height * ragged, height)
    zz = np.where(inside, z, np.inf).astype(np.float32)[None, :]
    with np.errstate(invalid="ignore"):
        world_y = cam.cam_h - (ys - cam.horizon) * zz / cam.focal
    mask = (world_y >= 0) & (world_y <= height[None, :]) & np.isfinite(zz)
    shape = (cam.height, cam.width)
    label2d = np.broadcast_to(label[None, :], shape)
    part = np.full(shape, MAIN, np.uint8)
    u = np.broadcast_to(along[None, :], shape).astype(np.float32)
    v = np.nan_to_num(world_y, posinf=0, neginf=0).astype(np.float32)
    windows = ((label2d == BUILDING) & ((u % 3.2) > 0.9) & ((u % 3.2) < 2.3) & ((v % 3.1) > 1.0)
               & ((v % 3.1) < 2.4) & (v > 2.0) & (v < height[None, :] - 0.8))
    part[windows] = GLASS
    part[(label2d == BUILDING) & (v < 0.5)] = DARK  # plinth
    part[(label2d == FENCE) & ((u % 2.5) < 0.15)] = DARK  # posts
    part[(label2d == WALL) & (v > height[None, :] - 0.15)] = PAINT  # coping
    canvas.paint((slice(None), slice(None)), mask, np.broadcast_to(zz, shape), label2d, part,
                 np.broadcast_to(tint[None, :], shape), u, v, np.full(shape, facing, np.uint8))


def _draw_side_planes(canvas: Canvas, cam: Camera, road: _Road, rng: np.random.Generator) -> None:
    """Per side: low walls/fences/hedges at the kerb, façades or trees behind, and a farther row; and
    sometimes a row of buildings across the end of the street."""
    heights = {BUILDING: (6.0, 28.0), WALL: (0.8, 2.2), FENCE: (0.9, 2.0), VEGETATION: (2.5, 9.0),
               TERRAIN: (0.0, 0.0)}
    for side in (-1, 1):
        facing = FACING_RIGHT if side < 0 else FACING_LEFT
        setback = road.setback[0 if side < 0 else 1]
        if setback > 0.5 and rng.random() < 0.7:
            barrier = _blocks(rng, [(WALL, 1), (FENCE, 1.5), (VEGETATION, 0.7)], 2.0, 120.0, (5, 25),
                              {**heights, VEGETATION: (0.8, 1.6)}, gap=0.4)
            _draw_plane(canvas, cam, barrier, road.kerb(side) + side * 0.2, None, facing)
        facade = _blocks(rng, [(BUILDING, 3), (VEGETATION, 1), (WALL, 0.3)], 1.0, 200.0, (6, 30), heights,
                         gap=rng.uniform(0.05, 0.3))
        _draw_plane(canvas, cam, facade, road.facade(side), None, facing)
        far = _blocks(rng, [(BUILDING, 2), (VEGETATION, 1)], 1.0, 300.0, (10, 40),
                      {**heights, BUILDING: (10.0, 45.0), VEGETATION: (6.0, 15.0)}, gap=0.3)
        _draw_plane(canvas, cam, far, road.facade(side) + side * rng.uniform(15, 40), None, facing)
    if rng.random() < 0.6:
        end = rng.uniform(60, 160)
        across = _blocks(rng, [(BUILDING, 2), (VEGETATION, 1)], -150.0, 150.0, (10, 40),
                         {**heights, BUILDING: (8.0, 40.0)}, gap=0.2)
        _draw_plane(canvas, cam, across, None, end, FACING_CAMERA)


# ---------------------------------------------------------------------------------------- objects
# A primitive is (kind, label, part, x0, x1, y0, y1[, inset]) in metres about the object's foot point:
# "rect" fills [x0, x1] x [y0, y1], "ellipse" the ellipse inscribed in it, and "trap" a trapezoid whose
# sides move inwards by ``inset`` from bottom (y0) to top (y1).


def _primitive_mask(kind: str, xs: np.ndarray, ys: np.ndarray, box, inset: float) -> np.ndarray:
    x0, x1, y0, y1 = box
    if kind == "rect":
        return (xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)
    if kind == "ellipse":
        cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
        return ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1
    t = np.clip((ys - y0) / (y1 - y0), 0, 1)
    return (xs >= x0 + inset * t) & (xs <= x1 - inset * t) & (ys >= y0) & (ys <= y1)


def _billboard(primitives: list[tuple], x_road: float, tint: float):
    """A function drawing an upright object standing at lateral offset ``x_road`` and a given depth."""

    def draw(canvas: Canvas, cam: Camera, z: float) -> None:
        cx, ground_y, scale = cam.screen(x_road, z)
        for kind, label, part, x0, x1, y0, y1, *rest in primitives:
            # at least one pixel wide and high, so that thin poles and small lamps stay visible
            half_w, half_h = max((x1 - x0) / 2, 0.5 / scale), max((y1 - y0) / 2, 0.5 / scale)
            mid_x, mid_y = (x0 + x1) / 2, (y0 + y1) / 2
            box = (mid_x - half_w, mid_x + half_w, mid_y - half_h, mid_y + half_h)
            c0, c1 = max(int(cx + box[0] * scale), 0), min(int(np.ceil(cx + box[1] * scale)), cam.width)
            r0 = max(int(ground_y - box[3] * scale), 0)
            r1 = min(int(np.ceil(ground_y - box[2] * scale)), cam.height)
            if c0 >= c1 or r0 >= r1:
                continue
            local_x = ((np.arange(c0, c1, dtype=np.float32) + 0.5)[None, :] - cx) / scale
            local_y = (ground_y - (np.arange(r0, r1, dtype=np.float32) + 0.5)[:, None]) / scale
            mask = _primitive_mask(kind, local_x, local_y, box, rest[0] if rest else 0.0)
            shape = mask.shape
            canvas.paint((slice(r0, r1), slice(c0, c1)), mask, np.float32(z), label, part, np.float32(tint),
                         np.broadcast_to(local_x + 10 * tint, shape), np.broadcast_to(local_y, shape),
                         FACING_CAMERA)

    return draw


def _car(rng: np.random.Generator) -> list[tuple]:
    """A car seen from behind: body, cabin with rear window, tail lights, plate, bumper and tyres."""
    w, h = rng.uniform(1.65, 1.95), rng.uniform(1.35, 1.6)
    half, belt = w / 2, h * rng.uniform(0.5, 0.6)
    return [("rect", CAR, MAIN, -half, half, 0.2, belt),
            ("trap", CAR, MAIN, -half * 0.95, half * 0.95, belt, h, half * 0.25),
            ("trap", CAR, GLASS, -half * 0.8, half * 0.8, belt + 0.06, h - 0.08, half * 0.22),
            ("rect", CAR, LAMP, -half * 0.95, -half * 0.72, belt - 0.22, belt - 0.06),
            ("rect", CAR, LAMP, half * 0.72, half * 0.95, belt - 0.22, belt - 0.06),
            ("rect", CAR, PAINT, -0.26, 0.26, 0.38, 0.5),
            ("rect", CAR, DARK, -half, half, 0.15, 0.3),
            ("rect", CAR, DARK, -half * 0.95, -half * 0.62, 0.0, 0.3),
            ("rect", CAR, DARK, half * 0.62, half * 0.95, 0.0, 0.3)]


def _truck(rng: np.random.Generator) -> list[tuple]:
    h = rng.uniform(3.0, 3.8)
    return [("rect", TRUCK, MAIN, -1.25, 1.25, 0.7, h),
            ("rect", TRUCK, DARK, -1.2, 1.2, 0.3, 0.7),
            ("rect", TRUCK, PAINT, -1.2, -1.15, 0.8, h - 0.1),
            ("rect", TRUCK, PAINT, 1.15, 1.2, 0.8, h - 0.1),
            ("rect", TRUCK, LAMP, -1.2, -0.9, 0.45, 0.62), ("rect", TRUCK, LAMP, 0.9, 1.2, 0.45, 0.62),
            ("rect", TRUCK, DARK, -1.2, -0.7, 0.0, 0.5), ("rect", TRUCK, DARK, 0.7, 1.2, 0.0, 0.5)]


def _bus(rng: np.random.Generator) -> list[tuple]:
    h = rng.uniform(3.0, 3.4)
    return [("rect", BUS, MAIN, -1.27, 1.27, 0.3, h),
            ("rect", BUS, GLASS, -1.1, 1.1, h * 0.55, h - 0.25),
            ("rect", BUS, PAINT, -0.6, 0.6, h - 0.22, h - 0.06),
            ("rect", BUS, LAMP, -1.2, -0.95, 0.6, 0.95), ("rect", BUS, LAMP, 0.95, 1.2, 0.6, 0.95),
            ("rect", BUS, DARK, -1.27, 1.27, 0.3, 0.5),
            ("rect", BUS, DARK, -1.2, -0.75, 0.0, 0.45), ("rect", BUS, DARK, 0.75, 1.2, 0.0, 0.45)]


def _human(label: int, h: float, base: float = 0.0) -> list[tuple]:
    """Legs, torso, arms and head of an upright figure of height ``h`` whose feet are at ``base``."""
    legs, neck = base + 0.47 * h, base + 0.82 * h
    head = 0.13 * h
    return [("rect", label, DARK, -0.16, -0.01, base, legs), ("rect", label, DARK, 0.01, 0.16, base, legs),
            ("trap", label, MAIN, -0.22, 0.22, legs - 0.05, neck, 0.03),
            ("rect", label, MAIN, -0.27, -0.2, legs + 0.05, neck - 0.05),
            ("rect", label, MAIN, 0.2, 0.27, legs + 0.05, neck - 0.05),
            ("ellipse", label, SKIN, -head * 0.42, head * 0.42, neck, neck + head)]


def _person(rng: np.random.Generator) -> list[tuple]:
    return _human(PERSON, rng.uniform(1.55, 1.9))


def _rider(rng: np.random.Generator) -> list[tuple]:
    """A cyclist or motorcyclist seen from the side: wheels, frame, and the rider on top."""
    motor = rng.random() < 0.4
    label, r, reach = (MOTORCYCLE, 0.33, 0.7) if motor else (BICYCLE, 0.34, 0.55)
    vehicle = [("ellipse", label, DARK, -reach - r, -reach + r, 0.0, 2 * r),
               ("ellipse", label, DARK, reach - r, reach + r, 0.0, 2 * r)]
    if motor:
        vehicle += [("rect", label, MAIN, -0.6, 0.55, 0.3, 0.75),
                    ("rect", label, LAMP, 0.55, 0.68, 0.55, 0.7)]
    else:
        vehicle += [("rect", label, MAIN, -reach, reach, 0.55, 0.62),
                    ("rect", label, MAIN, -0.05, 0.05, 0.3, 0.95)]
    return vehicle + _human(RIDER, rng.uniform(1.1, 1.3), base=0.55)


def _pole(rng: np.random.Generator, towards_road: float, lamps: list, x_road: float, z: float) -> list[tuple]:
    """A pole carrying a street lamp, a traffic light, a sign, or nothing."""
    kind = rng.choice(["lamp", "light", "sign", "plain"], p=[0.35, 0.25, 0.3, 0.1])
    if kind == "sign":
        h = rng.uniform(2.2, 3.0)
        shape = rng.choice(["ellipse", "rect", "trap"])
        inset = [0.33] if shape == "trap" else []
        return [("rect", POLE, MAIN, -0.05, 0.05, 0.0, h),
                (shape, SIGN, MAIN, -0.35, 0.35, h - 0.2, h + 0.5, *inset),
                (shape, SIGN, PAINT, -0.22, 0.22, h - 0.05, h + 0.35, *(inset and [0.21]))]
    h = rng.uniform(4.0, 5.0) if kind == "light" else rng.uniform(5.0, 8.5)
    parts = [("rect", POLE, MAIN, -0.08, 0.08, 0.0, h)]
    if kind == "lamp":
        arm = towards_road * rng.uniform(1.0, 2.2)
        head = sorted((arm * 0.8, arm * 1.05))
        parts += [("rect", POLE, MAIN, min(0, arm), max(0, arm), h - 0.12, h),
                  ("rect", POLE, LAMP, head[0], head[1], h - 0.3, h - 0.1)]
        lamps.append((x_road + arm, h - 0.2, z))
    elif kind == "light":
        parts += [("rect", LIGHT, MAIN, -0.2, 0.2, h - 0.1, h + 0.9)]
        lit = int(rng.integers(0, 3))  # the style colours the lit lamp red, amber or green from the tint
        for k in range(3):
            top = h + 0.85 - 0.3 * k
            parts.append(("ellipse", LIGHT, LAMP if k == lit else DARK, -0.12, 0.12, top - 0.24, top))
    return parts


def _tree(rng: np.random.Generator) -> list[tuple]:
    """Trunk and a crown of overlapping blobs (all vegetation, as Cityscapes labels trees)."""
    trunk = rng.uniform(1.8, 3.2)
    crown = rng.uniform(1.3, 2.8)
    parts = [("rect", VEGETATION, DARK, -0.14, 0.14, 0.0, trunk + crown * 0.5)]
    for _ in range(int(rng.integers(3, 6))):
        dx, dy, r = crown * rng.uniform([-0.6, 0.6, 0.55], [0.6, 1.4, 0.85])
        parts.append(("ellipse", VEGETATION, MAIN, dx - r, dx + r, trunk + dy - r, trunk + dy + r))
    return parts


def _spaced(rng: np.random.Generator, z0: float, z1: float, count: int, gap: float) -> list[float]:
    """Up to ``count`` depths in [z0, z1] at least ``gap`` apart."""
    chosen: list[float] = []
    for z in rng.uniform(z0, z1, size=count * 3):
        if len(chosen) < count and all(abs(z - other) >= gap for other in chosen):
            chosen.append(float(z))
    return chosen


def _place_objects(road: _Road, rng: np.random.Generator, lamps: list) -> list[tuple[float, object]]:
    """Vehicles in lanes and parked at the kerb, people on sidewalks, riders, poles and trees."""
    objects: list[tuple[float, object]] = []

    def add(z, primitives, x_road):
        objects.append((z, _billboard(primitives, x_road, float(rng.random()))))

    for centre in road.lane_centres:
        for z in _spaced(rng, 5.0, 70.0, int(rng.poisson(1.8)), 9.0):
            make = rng.choice([_car, _truck, _bus], p=[0.78, 0.11, 0.11])
            add(z, make(rng), centre + rng.uniform(-0.3, 0.3))
    for side in (-1, 1):
        edge = road.left if side < 0 else road.right
        if rng.random() < 0.7:
            for z in _spaced(rng, 4.0, 60.0, int(rng.integers(1, 6)), 5.5):
                add(z, _car(rng), edge - side * 1.1)
        walk = road.walk[0 if side < 0 else 1]
        for z in _spaced(rng, 3.0, 45.0, int(rng.poisson(2.2)), 1.0):
            add(z, _person(rng), edge + side * rng.uniform(0.4, walk - 0.3))
        for z in _spaced(rng, 3.0, 90.0, int(rng.integers(2, 6)), 8.0):
            x_road = edge + side * 0.45
            add(z, _pole(rng, -side, lamps, x_road, z), x_road)
        setback = road.setback[0 if side < 0 else 1]
        if setback > 1.5 or rng.random() < 0.3:
            spot = road.kerb(side) + side * (setback / 2 if setback > 1.5 else -0.4)
            for z in _spaced(rng, 4.0, 80.0, int(rng.integers(0, 6)), 6.0):
                add(z, _tree(rng), spot)
    if rng.random() < 0.5:
        for z in _spaced(rng, 5.0, 40.0, int(rng.integers(1, 3)), 6.0):
            add(z, _rider(rng), road.right - rng.uniform(0.6, 1.2))
    if road.crossing is not None:
        for z in _spaced(rng, road.crossing, road.crossing + 3, int(rng.integers(0, 3)), 0.5):
            add(z, _person(rng), rng.uniform(road.left + 1, road.right - 1))
    return objects
