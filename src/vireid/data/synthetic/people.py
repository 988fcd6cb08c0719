"""Seeded attributes of synthetic people, their poses, and camera styles.

Every random draw comes from a numpy ``Generator`` built from a tuple of integers
(:func:`make_rng`), so an identity, an image or a camera profile is reproducible on
its own, whatever order the dataset is written in.
"""

from __future__ import annotations

import colorsys
import zlib
from dataclasses import dataclass

import numpy as np

PATTERNS: tuple[str, ...] = ("solid", "stripes", "checks", "logo", "two_tone")
"""Garment patterns (docs/synthetic.md#attributes-of-an-identity)."""

LOWER_KINDS: tuple[str, ...] = ("trousers", "shorts", "skirt")
HAIR_LENGTHS: tuple[str, ...] = ("short", "medium", "long")
VIEWS: tuple[str, ...] = ("front", "back", "side")

# Stream tags keep the random streams of different purposes apart.
TAG_IDENTITY = 1
TAG_IMAGE = 2
TAG_TRACKLET = 3
TAG_CAMERA = 4
TAG_SPLIT = 5
TAG_LAYOUT = 6
# Populations of the synthetic CLIP (vireid.clip_pretrain): their identities come from
# streams no dataset layout uses, so they are disjoint from every benchmark population.
TAG_CLIP_PRETRAIN = 7
TAG_CLIP_HELDOUT = 8


def name_code(text: str) -> int:
    """A stable integer for a name (CRC-32), usable in a seed sequence."""
    return zlib.crc32(text.encode("utf-8"))


def make_rng(*keys: int) -> np.random.Generator:
    """A generator determined by the integer ``keys`` alone (PCG64 + SeedSequence)."""
    entropy = [int(k) & 0xFFFFFFFF for k in keys]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy)))


@dataclass(frozen=True)
class Garment:
    """One garment: visible colours (sRGB, 0..1), pattern, and infrared brightness.

    ``thermal`` and ``thermal_secondary`` are drawn independently of the colours,
    so a grey-scale copy of the visible image does not predict the infrared one.
    """

    color: tuple[float, float, float]
    color_secondary: tuple[float, float, float]
    pattern: str
    period: float  # pattern period, as a fraction of body height
    vertical: bool  # stripe / two-tone orientation
    thermal: float
    thermal_secondary: float


@dataclass(frozen=True)
class PersonAttributes:
    """Fixed attributes of one identity (docs/synthetic.md#attributes-of-an-identity)."""

    pid: int
    height: float  # fraction of the image height a person fills at scale 1
    shoulder_width: float  # half shoulder width / body height
    hip_width: float  # half hip width / body height
    leg_length: float  # hip-to-foot / body height
    head_size: float  # head height / body height
    posture: float  # forward/backward lean, radians
    limb_thickness: float  # multiplier on arm and leg radii
    gait_rate: float  # walking cycles per frame
    stride: float  # swing amplitude, radians
    skin: tuple[float, float, float]
    skin_thermal: float
    hair_color: tuple[float, float, float]
    hair_thermal: float
    hair_length: str
    upper: Garment
    sleeve_length: float  # 0 = sleeveless .. 1 = long sleeves
    lower: Garment
    lower_kind: str
    lower_length: float  # fraction of the leg covered (trousers ~1, shorts ~0.45, skirt ~0.5-0.8)
    shoes: tuple[float, float, float]
    shoes_thermal: float
    backpack: tuple[float, float, float] | None
    backpack_thermal: float
    shoulder_bag: tuple[float, float, float] | None
    bag_side: int  # +1 bag on the person's right, -1 on the left
    bag_thermal: float
    hat: tuple[float, float, float] | None
    hat_thermal: float
    glasses: bool


def _color(rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float]):
    h = float(rng.uniform(0.0, 1.0))
    s = float(rng.uniform(*sat))
    v = float(rng.uniform(*val))
    return tuple(float(c) for c in colorsys.hsv_to_rgb(h, s, v))


def _garment_color(rng: np.random.Generator) -> tuple[float, float, float]:
    """Clothing colour: mostly saturated hues, sometimes neutral (black/grey/white)."""
    if rng.random() < 0.25:
        v = float(rng.choice([0.12, 0.35, 0.6, 0.9]) + rng.uniform(-0.05, 0.05))
        return (v, v, v)
    return _color(rng, (0.45, 1.0), (0.3, 0.95))


def _secondary_color(rng: np.random.Generator, base: tuple[float, float, float]):
    """A second colour clearly different from ``base`` (luminance and hue)."""
    for _ in range(20):
        c = _garment_color(rng)
        if float(np.abs(np.subtract(c, base)).sum()) > 0.6:
            return c
    return tuple(float(1.0 - x) for x in base)


def _thermal_pair(rng: np.random.Generator) -> tuple[float, float]:
    t = float(rng.uniform(0.28, 0.78))
    delta = float(rng.uniform(0.12, 0.28)) * (1.0 if rng.random() < 0.5 else -1.0)
    t2 = t + delta
    if not 0.1 <= t2 <= 0.95:
        t2 = t - delta
    return t, float(np.clip(t2, 0.05, 0.95))


def _garment(rng: np.random.Generator, upper: bool) -> Garment:
    color = _garment_color(rng)
    probs = [0.3, 0.2, 0.15, 0.2, 0.15] if upper else [0.5, 0.2, 0.15, 0.0, 0.15]
    pattern = str(rng.choice(PATTERNS, p=probs))
    t, t2 = _thermal_pair(rng)
    return Garment(
        color=color,
        color_secondary=_secondary_color(rng, color),
        pattern=pattern,
        period=float(rng.uniform(0.035, 0.07)),
        vertical=bool(rng.random() < 0.35),
        thermal=t,
        thermal_secondary=t2,
    )


def sample_attributes(seed: int, pid: int, *, stream: int = TAG_IDENTITY) -> PersonAttributes:
    """The fixed attributes of identity ``pid`` under ``seed`` (``stream``: the
    population's tag; every dataset layout uses :data:`TAG_IDENTITY`)."""
    rng = make_rng(seed, stream, pid)
    skin_v = float(rng.uniform(0.35, 0.95))
    skin = (
        skin_v,
        skin_v * float(rng.uniform(0.72, 0.82)),
        skin_v * float(rng.uniform(0.55, 0.68)),
    )
    hair_v = float(rng.choice([0.08, 0.2, 0.4, 0.75]))
    hair = (hair_v, hair_v * 0.8, hair_v * 0.55)
    lower_kind = str(rng.choice(LOWER_KINDS, p=[0.65, 0.15, 0.2]))
    lower_length = {
        "trousers": float(rng.uniform(0.92, 1.0)),
        "shorts": float(rng.uniform(0.35, 0.5)),
        "skirt": float(rng.uniform(0.45, 0.8)),
    }[lower_kind]
    sleeve = float(rng.choice([0.08, 0.35, 1.0], p=[0.15, 0.4, 0.45]))
    has_backpack = rng.random() < 0.35
    has_bag = rng.random() < 0.3
    has_hat = rng.random() < 0.2
    return PersonAttributes(
        pid=pid,
        height=float(rng.uniform(0.84, 0.97)),
        shoulder_width=float(rng.uniform(0.095, 0.135)),
        hip_width=float(rng.uniform(0.07, 0.1)),
        leg_length=float(rng.uniform(0.44, 0.53)),
        head_size=float(rng.uniform(0.11, 0.145)),
        posture=float(rng.uniform(-0.07, 0.07)),
        limb_thickness=float(rng.uniform(0.8, 1.25)),
        gait_rate=float(rng.uniform(0.05, 0.11)),
        stride=float(rng.uniform(0.25, 0.45)),
        skin=skin,
        skin_thermal=float(rng.uniform(0.86, 0.97)),
        hair_color=hair,
        hair_thermal=float(rng.uniform(0.45, 0.62)),
        hair_length=str(rng.choice(HAIR_LENGTHS, p=[0.45, 0.3, 0.25])),
        upper=_garment(rng, upper=True),
        sleeve_length=sleeve,
        lower=_garment(rng, upper=False),
        lower_kind=lower_kind,
        lower_length=lower_length,
        shoes=_color(rng, (0.0, 0.5), (0.05, 0.8)),
        shoes_thermal=float(rng.uniform(0.2, 0.4)),
        backpack=_garment_color(rng) if has_backpack else None,
        backpack_thermal=float(rng.uniform(0.12, 0.3)),
        shoulder_bag=_garment_color(rng) if has_bag else None,
        bag_side=1 if rng.random() < 0.5 else -1,
        bag_thermal=float(rng.uniform(0.12, 0.3)),
        hat=_garment_color(rng) if has_hat else None,
        hat_thermal=float(rng.uniform(0.3, 0.55)),
        glasses=bool(rng.random() < 0.25),
    )


@dataclass(frozen=True)
class Pose:
    """Where and how a person stands in one frame."""

    view: str = "front"  # front | back | side
    facing_left: bool = False  # side view only: mirror the figure
    phase: float = 0.0  # gait phase, radians
    swing: float = 0.3  # fraction of the identity's stride used (0 = standing)
    scale: float = 0.95  # person height multiplier
    dx: float = 0.0  # horizontal offset of the body centre, fraction of image width
    dy: float = 0.0  # vertical offset, fraction of image height


@dataclass(frozen=True)
class CameraProfile:
    """The look of one camera: light and colour cast (visible) or sensor response (infrared)."""

    gain: float
    white_balance: tuple[float, float, float]
    background_hue: float
    background_clutter: float
    view_weights: tuple[float, float, float]
    scale_center: float
    ir_background: float
    ir_contrast: float
    ir_noise: float
    blur: float


def sample_camera(rng: np.random.Generator) -> CameraProfile:
    w = rng.dirichlet([2.0, 2.0, 2.0])
    return CameraProfile(
        gain=float(rng.uniform(0.7, 1.2)),
        white_balance=(
            float(rng.uniform(0.8, 1.2)),
            1.0,
            float(rng.uniform(0.8, 1.2)),
        ),
        background_hue=float(rng.uniform(0.0, 1.0)),
        background_clutter=float(rng.uniform(0.3, 1.0)),
        view_weights=(float(w[0]), float(w[1]), float(w[2])),
        scale_center=float(rng.uniform(0.88, 0.98)),
        ir_background=float(rng.uniform(0.06, 0.22)),
        ir_contrast=float(rng.uniform(0.6, 0.85)),
        ir_noise=float(rng.uniform(0.012, 0.035)),
        blur=float(rng.uniform(0.3, 0.8)),
    )


def sample_pose(rng: np.random.Generator, camera: CameraProfile, walking: bool = True) -> Pose:
    """A random still pose for one image under ``camera``."""
    view = str(rng.choice(VIEWS, p=np.asarray(camera.view_weights)))
    return Pose(
        view=view,
        facing_left=bool(rng.random() < 0.5),
        phase=float(rng.uniform(0.0, 2.0 * np.pi)),
        swing=float(rng.uniform(0.2, 1.0)) if walking else 0.0,
        scale=float(np.clip(camera.scale_center + rng.normal(0.0, 0.03), 0.8, 1.02)),
        dx=float(rng.normal(0.0, 0.04)),
        dy=float(rng.normal(0.0, 0.02)),
    )
