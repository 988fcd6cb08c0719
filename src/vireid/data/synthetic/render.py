"""Vectorised numpy renderer of synthetic people in visible and infrared light.

A frame is drawn in two steps. :func:`rasterize` paints a *part map* (which body
part or accessory covers each pixel), a *pattern mask* (where a garment shows its
secondary colour / thermal value) and a shading map, from the identity's
attributes and a :class:`Pose`. The part map is then coloured either in visible
light (garment colours, illumination, white balance, cluttered background) or in
infrared (skin bright, each garment at its own thermal value, dark smooth
background, lower contrast, sensor noise). Shape, pattern geometry and
accessories are the same in both; colour exists only in visible light
(docs/synthetic.md#rendering).

Every shape is drawn only inside its bounding box, so one 128x64 frame costs a few
milliseconds on one core.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
from PIL import Image, ImageFilter

from vireid.data.types import Modality

from .people import CameraProfile, Garment, PersonAttributes, Pose, make_rng, sample_pose

# Part codes of the part map.
BACKGROUND, SKIN, HAIR, UPPER, LOWER, SHOES, HAT, BACKPACK, BAG, GLASSES, OCCLUDER = range(11)
NUM_PARTS = 11

NEUTRAL_CAMERA = CameraProfile(
    gain=1.0,
    white_balance=(1.0, 1.0, 1.0),
    background_hue=0.3,
    background_clutter=0.6,
    view_weights=(0.4, 0.3, 0.3),
    scale_center=0.94,
    ir_background=0.12,
    ir_contrast=0.75,
    ir_noise=0.02,
    blur=0.5,
)


@lru_cache(maxsize=8)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    ys += 0.5
    xs += 0.5
    ys.setflags(write=False)
    xs.setflags(write=False)
    return ys, xs


@dataclass
class Layers:
    """The geometry of one frame, shared by its visible and infrared renderings."""

    part: np.ndarray  # (H, W) uint8 part codes
    secondary: np.ndarray  # (H, W) bool: garment pixel showing the pattern's second tone
    shade: np.ndarray  # (H, W) float32 shading of the body, 1 on the background


class _Canvas:
    def __init__(self, h: int, w: int) -> None:
        self.h, self.w = h, w
        self.part = np.zeros((h, w), np.uint8)
        self.sec = np.zeros((h, w), bool)
        self.yy, self.xx = _grid(h, w)
        self.patterns: dict[int, object] = {}

    def _box(self, x0: float, x1: float, y0: float, y1: float):
        ix0, ix1 = max(int(math.floor(x0)), 0), min(int(math.ceil(x1)) + 1, self.w)
        iy0, iy1 = max(int(math.floor(y0)), 0), min(int(math.ceil(y1)) + 1, self.h)
        if ix0 >= ix1 or iy0 >= iy1:
            return None
        return (slice(iy0, iy1), slice(ix0, ix1))

    def _paint(self, box, mask: np.ndarray, part: int) -> None:
        if not mask.any():
            return
        self.part[box][mask] = part
        fn = self.patterns.get(part)
        if fn is None:
            self.sec[box][mask] = False
        else:
            self.sec[box][mask] = fn(self.yy[box][mask], self.xx[box][mask])

    def capsule(self, p0, p1, r: float, part: int) -> None:
        (x0, y0), (x1, y1) = p0, p1
        box = self._box(min(x0, x1) - r, max(x0, x1) + r, min(y0, y1) - r, max(y0, y1) + r)
        if box is None:
            return
        ys, xs = self.yy[box], self.xx[box]
        dx, dy = x1 - x0, y1 - y0
        l2 = dx * dx + dy * dy
        if l2 < 1e-9:
            d2 = (xs - x0) ** 2 + (ys - y0) ** 2
        else:
            t = np.clip(((xs - x0) * dx + (ys - y0) * dy) / l2, 0.0, 1.0)
            d2 = (xs - x0 - t * dx) ** 2 + (ys - y0 - t * dy) ** 2
        self._paint(box, d2 <= r * r, part)

    def ellipse(self, cx, cy, rx, ry, part, y_below=None, y_above=None, x_left=None, x_right=None):
        """Ellipse, optionally clipped to y < y_below, y > y_above, x < x_left, x > x_right."""
        box = self._box(cx - rx, cx + rx, cy - ry, cy + ry)
        if box is None:
            return
        ys, xs = self.yy[box], self.xx[box]
        mask = ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1.0
        if y_below is not None:
            mask &= ys < y_below
        if y_above is not None:
            mask &= ys > y_above
        if x_left is not None:
            mask &= xs < x_left
        if x_right is not None:
            mask &= xs > x_right
        self._paint(box, mask, part)

    def rect(self, x0, y0, x1, y1, part) -> None:
        box = self._box(x0, x1, y0, y1)
        if box is None:
            return
        ys, xs = self.yy[box], self.xx[box]
        self._paint(box, (xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1), part)

    def polygon(self, points, part) -> None:
        """Convex polygon given by its corners in order."""
        px = [p[0] for p in points]
        py = [p[1] for p in points]
        box = self._box(min(px), max(px), min(py), max(py))
        if box is None:
            return
        ys, xs = self.yy[box], self.xx[box]
        n = len(points)
        area = sum(px[i] * py[(i + 1) % n] - px[(i + 1) % n] * py[i] for i in range(n))
        sign = 1.0 if area >= 0 else -1.0
        mask = np.ones(ys.shape, bool)
        for i in range(n):
            ax, ay = points[i]
            bx, by = points[(i + 1) % n]
            mask &= sign * ((bx - ax) * (ys - ay) - (by - ay) * (xs - ax)) >= 0
        self._paint(box, mask, part)


def _pattern_fn(g: Garment, cx: float, y_ref: float, hp: float, split: float, front: bool):
    """Pattern mask in body coordinates (fractions of body height from a reference point)."""
    p = g.period
    if g.pattern == "solid":
        return None
    if g.pattern == "stripes":
        if g.vertical:
            return lambda ys, xs: (np.floor((xs - cx) / (hp * p)) % 2) == 1
        return lambda ys, xs: (np.floor((ys - y_ref) / (hp * p)) % 2) == 1
    if g.pattern == "checks":
        return lambda ys, xs: (
            ((np.floor((xs - cx) / (hp * p)) + np.floor((ys - y_ref) / (hp * p))) % 2) == 1
        )
    if g.pattern == "two_tone":
        if g.vertical:
            return lambda ys, xs: xs > cx
        return lambda ys, xs: ys > y_ref + split * hp
    if g.pattern == "logo":
        if not front:
            return None
        half_w = (0.035 + 0.6 * p) * hp
        top = y_ref + 0.04 * hp
        bottom = top + (0.03 + 0.8 * p) * hp
        lcx = cx + (0.0 if g.vertical else -0.04 * hp)
        return lambda ys, xs: (np.abs(xs - lcx) <= half_w) & (ys >= top) & (ys <= bottom)
    raise ValueError(f"unknown garment pattern {g.pattern!r}")


class _Figure:
    """One person (``attrs``) in one ``pose`` on an (H, W) canvas: its geometry, and one
    method per body part; :func:`rasterize` paints them back to front."""

    def __init__(self, attrs: PersonAttributes, pose: Pose, image_size: tuple[int, int]) -> None:
        self.attrs, self.pose = attrs, pose
        h, w = image_size
        cv = _Canvas(h, w)
        hp = attrs.height * pose.scale * h
        top = (h - hp) / 2.0 + pose.dy * h
        foot_y = top + hp
        cx = w / 2.0 + pose.dx * w
        side = pose.view == "side"
        front = pose.view == "front"
        back = pose.view == "back"

        head_ry = attrs.head_size * hp / 2.0
        head_rx = head_ry * (0.85 if side else 0.78)
        neck_y = top + 2 * head_ry
        sh_y = neck_y + 0.035 * hp
        hip_y = foot_y - attrs.leg_length * hp
        lean = attrs.posture
        sw = attrs.shoulder_width * hp * (0.5 if side else 1.0)
        hw = attrs.hip_width * hp * (0.62 if side else 1.0)
        arm_r = 0.03 * hp * attrs.limb_thickness
        leg_r = 0.043 * hp * attrs.limb_thickness
        upper_len, fore_len = 0.165 * hp, 0.15 * hp
        leg_len = foot_y - hip_y - 0.02 * hp
        thigh_len = shin_len = leg_len / 2.0
        head_cx = (
            cx
            + lean * (hip_y - (top + head_ry)) * (1.0 if side else 0.25)
            + (0.02 * hp if side else 0.0)
        )
        head_cy = top + head_ry
        a = pose.swing * attrs.stride * math.sin(pose.phase)

        hip_c = cx + (0.01 * hp if side else 0.0)
        tx = lean * (hip_y - sh_y) * (1.0 if side else 0.25)
        torso_split = 0.5 * (hip_y - sh_y) / hp
        cv.patterns[UPPER] = _pattern_fn(attrs.upper, cx, sh_y, hp, torso_split, front)
        lower_split = 0.5 * attrs.lower_length * leg_len / hp
        cv.patterns[LOWER] = _pattern_fn(attrs.lower, cx, hip_y, hp, lower_split, front)

        self.cv, self.h, self.w, self.hp, self.top, self.foot_y, self.cx = (
            cv,
            h,
            w,
            hp,
            top,
            foot_y,
            cx,
        )
        self.side, self.front, self.back = side, front, back
        self.head_ry, self.head_rx, self.neck_y, self.sh_y, self.hip_y = (
            head_ry,
            head_rx,
            neck_y,
            sh_y,
            hip_y,
        )
        self.lean, self.sw, self.hw, self.arm_r, self.leg_r = lean, sw, hw, arm_r, leg_r
        self.upper_len, self.fore_len, self.leg_len = upper_len, fore_len, leg_len
        self.thigh_len, self.shin_len, self.head_cx, self.head_cy = (
            thigh_len,
            shin_len,
            head_cx,
            head_cy,
        )
        self.a, self.hip_c, self.tx = a, hip_c, tx

    def lx(self, y: float) -> float:
        """Horizontal shift of the upper body at height ``y`` from leaning."""
        return self.lean * (self.hip_y - y) * (1.0 if self.side else 0.25)

    def leg(self, hip_pt, angle, lift) -> None:
        """A leg from the hip: skin, the lower garment's cover, the shoe."""
        hx, hy = hip_pt
        knee = (hx + self.thigh_len * math.sin(angle), hy + self.thigh_len * math.cos(angle))
        shin_angle = angle - 0.9 * max(0.0, -angle)
        foot = (
            knee[0] + self.shin_len * math.sin(shin_angle),
            knee[1] + self.shin_len * math.cos(shin_angle) - lift,
        )
        self.cv.capsule(hip_pt, knee, self.leg_r, SKIN)
        self.cv.capsule(knee, foot, self.leg_r * 0.82, SKIN)
        if self.attrs.lower_kind != "skirt":
            cover = self.attrs.lower_length * self.leg_len
            if cover <= self.thigh_len:
                t = cover / self.thigh_len
                end = (hx + t * (knee[0] - hx), hy + t * (knee[1] - hy))
                self.cv.capsule(hip_pt, end, self.leg_r * 1.12, LOWER)
            else:
                t = min((cover - self.thigh_len) / self.shin_len, 1.0)
                end = (knee[0] + t * (foot[0] - knee[0]), knee[1] + t * (foot[1] - knee[1]))
                self.cv.capsule(hip_pt, knee, self.leg_r * 1.12, LOWER)
                self.cv.capsule(knee, end, self.leg_r * 0.98, LOWER)
        toe = (foot[0] + (0.045 * self.hp if self.side else 0.0), foot[1])
        self.cv.capsule(foot, toe, self.leg_r * 0.85, SHOES)

    def arm(self, shoulder, angle, bend) -> None:
        """An arm from the shoulder: skin, hand, the sleeve's cover."""
        sx, sy = shoulder
        elbow = (sx + self.upper_len * math.sin(angle), sy + self.upper_len * math.cos(angle))
        fa = angle + bend
        hand = (elbow[0] + self.fore_len * math.sin(fa), elbow[1] + self.fore_len * math.cos(fa))
        self.cv.capsule(shoulder, elbow, self.arm_r, SKIN)
        self.cv.capsule(elbow, hand, self.arm_r * 0.9, SKIN)
        self.cv.ellipse(hand[0], hand[1], self.arm_r * 1.05, self.arm_r * 1.2, SKIN)
        cover = self.attrs.sleeve_length * (self.upper_len + self.fore_len)
        if cover <= self.upper_len:
            t = cover / self.upper_len
            self.cv.capsule(
                shoulder,
                (sx + t * (elbow[0] - sx), sy + t * (elbow[1] - sy)),
                self.arm_r * 1.18,
                UPPER,
            )
        else:
            t = min((cover - self.upper_len) / self.fore_len, 1.0)
            self.cv.capsule(shoulder, elbow, self.arm_r * 1.18, UPPER)
            end = (elbow[0] + t * (hand[0] - elbow[0]), elbow[1] + t * (hand[1] - elbow[1]))
            self.cv.capsule(elbow, end, self.arm_r * 1.08, UPPER)

    def hair_behind(self) -> None:
        """Long hair hanging behind the body."""
        if self.attrs.hair_length == "short" or self.back:
            return
        bottom = (
            self.neck_y + 0.01 * self.hp
            if self.attrs.hair_length == "medium"
            else self.sh_y + 0.12 * self.hp
        )
        if self.side:
            self.cv.rect(
                self.head_cx - self.head_rx * 1.05,
                self.head_cy,
                self.head_cx - 0.05 * self.head_rx,
                bottom,
                HAIR,
            )
        else:
            self.cv.rect(
                self.head_cx - self.head_rx * 1.12,
                self.head_cy,
                self.head_cx + self.head_rx * 1.12,
                bottom,
                HAIR,
            )

    def far_side(self) -> None:
        """What lies behind the torso: far limbs (side view) or both legs, a side backpack, hair."""
        if self.side:
            self.arm(
                (self.cx + self.lx(self.sh_y), self.sh_y + self.arm_r),
                0.8 * self.a,
                0.25 + 0.3 * abs(self.a),
            )  # far arm
            self.leg((self.hip_c, self.hip_y), -self.a, 0.0)  # far leg
        else:
            self.hair_behind()
            lift = 0.12 * self.leg_len
            self.leg((self.cx - self.hw * 0.55, self.hip_y), 0.02, lift * max(0.0, self.a))
            self.leg((self.cx + self.hw * 0.55, self.hip_y), -0.02, lift * max(0.0, -self.a))

        if self.side and self.attrs.backpack is not None:
            back_x = self.cx + self.lx(self.sh_y) - self.sw * 1.05
            self.cv.rect(
                back_x - 0.085 * self.hp,
                self.sh_y + 0.015 * self.hp,
                back_x + 0.01 * self.hp,
                self.sh_y + 0.62 * (self.hip_y - self.sh_y),
                BACKPACK,
            )
        if self.side:
            self.hair_behind()

    def torso(self) -> None:
        """Pelvis, torso, shoulders and a skirt."""
        # pelvis (top of the lower garment) then torso
        self.cv.polygon(
            [
                (self.hip_c - self.hw * 1.02, self.hip_y - 0.03 * self.hp),
                (self.hip_c + self.hw * 1.02, self.hip_y - 0.03 * self.hp),
                (self.hip_c + self.hw * 1.06, self.hip_y + 0.07 * self.hp),
                (self.hip_c - self.hw * 1.06, self.hip_y + 0.07 * self.hp),
            ],
            LOWER,
        )
        self.cv.polygon(
            [
                (self.cx + self.tx - self.sw, self.sh_y),
                (self.cx + self.tx + self.sw, self.sh_y),
                (self.hip_c + self.hw * 1.02, self.hip_y + 0.015 * self.hp),
                (self.hip_c - self.hw * 1.02, self.hip_y + 0.015 * self.hp),
            ],
            UPPER,
        )
        self.cv.capsule(
            (self.cx + self.tx - self.sw + self.arm_r * 0.6, self.sh_y + self.arm_r * 0.6),
            (self.cx + self.tx + self.sw - self.arm_r * 0.6, self.sh_y + self.arm_r * 0.6),
            self.arm_r * 1.15,
            UPPER,
        )
        if self.attrs.lower_kind == "skirt":
            s_len = self.attrs.lower_length * self.leg_len
            flare = 0.05 * self.hp * (0.6 if self.side else 1.0)
            self.cv.polygon(
                [
                    (self.hip_c - self.hw * 1.05, self.hip_y - 0.02 * self.hp),
                    (self.hip_c + self.hw * 1.05, self.hip_y - 0.02 * self.hp),
                    (self.hip_c + self.hw * 1.05 + flare, self.hip_y + s_len),
                    (self.hip_c - self.hw * 1.05 - flare, self.hip_y + s_len),
                ],
                LOWER,
            )

    def head(self) -> None:
        """Neck, head, hair, glasses and hat."""
        # neck and head
        self.cv.capsule(
            (self.cx + self.lx(self.neck_y), self.neck_y + 0.01 * self.hp),
            (self.head_cx, self.head_cy),
            self.head_rx * 0.42,
            SKIN,
        )
        if self.back:
            self.cv.ellipse(self.head_cx, self.head_cy, self.head_rx, self.head_ry, HAIR)
            if self.attrs.hair_length != "short":
                bottom = (
                    self.neck_y + 0.02 * self.hp
                    if self.attrs.hair_length == "medium"
                    else self.sh_y + 0.13 * self.hp
                )
                self.cv.rect(
                    self.head_cx - self.head_rx * 1.05,
                    self.head_cy,
                    self.head_cx + self.head_rx * 1.05,
                    bottom,
                    HAIR,
                )
        else:
            self.cv.ellipse(self.head_cx, self.head_cy, self.head_rx, self.head_ry, SKIN)
            cap_limit = (
                self.head_cy - (0.2 if self.attrs.hair_length == "short" else 0.05) * self.head_ry
            )
            self.cv.ellipse(
                self.head_cx,
                self.head_cy,
                self.head_rx * 1.07,
                self.head_ry * 1.07,
                HAIR,
                y_below=cap_limit,
            )
            if self.side:
                self.cv.ellipse(
                    self.head_cx,
                    self.head_cy,
                    self.head_rx * 1.05,
                    self.head_ry * 1.05,
                    HAIR,
                    x_left=self.head_cx - 0.15 * self.head_rx,
                )
            if self.attrs.glasses:
                gy = self.head_cy - 0.02 * self.head_ry
                if self.front:
                    self.cv.rect(
                        self.head_cx - self.head_rx * 0.8,
                        gy - 0.1 * self.head_ry,
                        self.head_cx + self.head_rx * 0.8,
                        gy + 0.12 * self.head_ry,
                        GLASSES,
                    )
                else:
                    self.cv.rect(
                        self.head_cx + self.head_rx * 0.35,
                        gy - 0.1 * self.head_ry,
                        self.head_cx + self.head_rx * 1.0,
                        gy + 0.12 * self.head_ry,
                        GLASSES,
                    )
        if self.attrs.hat is not None:
            self.cv.ellipse(
                self.head_cx,
                self.head_cy - 0.35 * self.head_ry,
                self.head_rx * 1.12,
                self.head_ry * 0.8,
                HAT,
                y_below=self.head_cy - 0.3 * self.head_ry,
            )
            if self.side:
                self.cv.rect(
                    self.head_cx,
                    self.head_cy - 0.42 * self.head_ry,
                    self.head_cx + self.head_rx * 1.6,
                    self.head_cy - 0.28 * self.head_ry,
                    HAT,
                )

    def accessories(self) -> None:
        """Backpack and shoulder bag over the torso."""
        # accessories over the torso
        if self.attrs.backpack is not None:
            if self.back:
                self.cv.rect(
                    self.cx + self.tx - self.sw * 0.78,
                    self.sh_y + 0.02 * self.hp,
                    self.cx + self.tx + self.sw * 0.78,
                    self.sh_y + 0.62 * (self.hip_y - self.sh_y),
                    BACKPACK,
                )
            elif self.front:
                for sgn in (-1.0, 1.0):
                    sx = self.cx + self.tx + sgn * self.sw * 0.6
                    self.cv.rect(
                        sx - 0.013 * self.hp,
                        self.sh_y,
                        sx + 0.013 * self.hp,
                        self.sh_y + 0.45 * (self.hip_y - self.sh_y),
                        BACKPACK,
                    )
            else:
                self.cv.capsule(
                    (self.cx + self.tx + self.sw * 0.3, self.sh_y + 0.01 * self.hp),
                    (self.cx + self.tx - self.sw * 0.9, self.sh_y + 0.3 * (self.hip_y - self.sh_y)),
                    0.012 * self.hp,
                    BACKPACK,
                )
        if self.attrs.shoulder_bag is not None:
            side_sign = self.attrs.bag_side * (-1.0 if self.front else 1.0)
            if self.side:
                side_sign = 0.3
            bag_x = self.cx + side_sign * (self.hw + 0.045 * self.hp)
            bag_top = self.hip_y - 0.05 * self.hp
            self.cv.capsule(
                (self.cx + self.tx - side_sign * self.sw * 0.8, self.sh_y + 0.01 * self.hp),
                (bag_x, bag_top),
                0.011 * self.hp,
                BAG,
            )
            self.cv.rect(
                bag_x - 0.05 * self.hp,
                bag_top,
                bag_x + 0.05 * self.hp,
                bag_top + 0.09 * self.hp,
                BAG,
            )

    def near_side(self) -> None:
        """What lies in front of the torso: near limbs (side view) or both arms."""
        # front arms
        if self.side:
            self.arm(
                (self.cx + self.tx, self.sh_y + self.arm_r), -0.8 * self.a, 0.25 + 0.3 * abs(self.a)
            )  # near arm
            self.leg((self.hip_c, self.hip_y), self.a, 0.0)  # near leg
            # the near leg must not hide the skirt / pelvis garment entirely: redraw pelvis edge
            if self.attrs.lower_kind == "skirt":
                s_len = self.attrs.lower_length * self.leg_len
                self.cv.polygon(
                    [
                        (self.hip_c - self.hw * 1.05, self.hip_y - 0.02 * self.hp),
                        (self.hip_c + self.hw * 1.05, self.hip_y - 0.02 * self.hp),
                        (self.hip_c + self.hw * 1.05 + 0.03 * self.hp, self.hip_y + s_len),
                        (self.hip_c - self.hw * 1.05 - 0.03 * self.hp, self.hip_y + s_len),
                    ],
                    LOWER,
                )
        else:
            swing_out = 0.1 + 0.04 * self.a
            self.arm(
                (self.cx + self.tx - self.sw, self.sh_y + self.arm_r * 0.8),
                swing_out,
                0.05 + 0.2 * max(0.0, self.a),
            )
            self.arm(
                (self.cx + self.tx + self.sw, self.sh_y + self.arm_r * 0.8),
                -(0.1 - 0.04 * self.a),
                -(0.05 + 0.2 * max(0.0, -self.a)),
            )

    def layers(self) -> Layers:
        """The part map with its shading (mirrored for a side view facing left)."""
        part, sec = self.cv.part, self.cv.sec
        yy, xx = self.cv.yy, self.cv.xx
        rel = np.minimum(((xx - (self.cx + self.tx)) / (self.sw * 1.7 + 1e-6)) ** 2, 1.0)
        shade = 1.0 - 0.32 * rel - 0.08 * np.clip((yy - self.top) / self.hp, 0.0, 1.0)
        shade = np.where(part > 0, shade, 1.0).astype(np.float32)
        if self.pose.view == "side" and self.pose.facing_left:
            part, sec, shade = part[:, ::-1].copy(), sec[:, ::-1].copy(), shade[:, ::-1].copy()
        return Layers(part=part, secondary=sec, shade=shade)


def rasterize(attrs: PersonAttributes, pose: Pose, image_size: tuple[int, int]) -> Layers:
    """Paint the part map of ``attrs`` in ``pose`` on an ``image_size`` (H, W) canvas."""
    figure = _Figure(attrs, pose, image_size)
    figure.far_side()
    figure.torso()
    figure.head()
    figure.accessories()
    figure.near_side()
    return figure.layers()


def add_occluder(layers: Layers, box: tuple[float, float, float, float]) -> Layers:
    """Cover the fractional box (x0, y0, x1, y1) of the frame with an occluding object."""
    h, w = layers.part.shape
    x0, y0, x1, y1 = box
    part = layers.part.copy()
    sec = layers.secondary.copy()
    shade = layers.shade.copy()
    ys = slice(max(int(y0 * h), 0), min(int(math.ceil(y1 * h)), h))
    xs = slice(max(int(x0 * w), 0), min(int(math.ceil(x1 * w)), w))
    part[ys, xs] = OCCLUDER
    sec[ys, xs] = False
    shade[ys, xs] = 1.0
    return Layers(part=part, secondary=sec, shade=shade)


# --- appearance -------------------------------------------------------------------------


@dataclass
class Look:
    """Appearance conditions of one image or one whole tracklet (background, light, sensor)."""

    background: np.ndarray  # visible (H, W, 3) or infrared (H, W), float32 in 0..1
    gain: float
    white_balance: np.ndarray  # (3,)
    light_slope: float  # horizontal illumination gradient (visible)
    contrast: float  # infrared contrast
    blur: float  # Gaussian blur radius, pixels
    noise: float  # sensor noise sigma
    occluder_color: tuple[float, float, float]
    occluder_thermal: float


def _upsample(grid: np.ndarray, h: int, w: int) -> np.ndarray:
    img = Image.fromarray(np.clip(grid * 255.0, 0, 255).astype(np.uint8))
    return np.asarray(img.resize((w, h), Image.BILINEAR), dtype=np.float32) / 255.0


def _hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB for an array whose last axis is (h, s, v), all in 0..1."""
    h, s, v = hsv[..., 0] % 1.0, hsv[..., 1], hsv[..., 2]
    i = np.floor(h * 6.0)
    f = h * 6.0 - i
    p, q, t = v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f))
    i = i.astype(np.int64) % 6
    r = np.choose(i, [v, q, p, p, t, v])
    g = np.choose(i, [t, v, v, q, p, p])
    b = np.choose(i, [p, p, t, v, v, q])
    return np.stack([r, g, b], axis=-1).astype(np.float32)


def _visible_background(
    rng: np.random.Generator, camera: CameraProfile, h: int, w: int
) -> np.ndarray:
    """Cluttered coloured scene: a smooth colour field, a floor, and random boxes."""
    gh, gw = 6, 4
    hsv = np.stack(
        [
            camera.background_hue
            + rng.normal(0.0, 0.12 + 0.2 * camera.background_clutter, (gh, gw)),
            rng.uniform(0.05, 0.55, (gh, gw)),
            rng.uniform(0.25, 0.85, (gh, gw)),
        ],
        axis=-1,
    )
    bg = _upsample(_hsv_to_rgb(hsv), h, w).copy()
    floor_y = int(h * rng.uniform(0.72, 0.9))
    floor = _hsv_to_rgb(np.array([rng.uniform(0, 1), rng.uniform(0.0, 0.3), rng.uniform(0.3, 0.7)]))
    ramp = 0.85 + 0.3 * (np.arange(floor_y, h, dtype=np.float32) - floor_y) / h
    bg[floor_y:] = floor * ramp[:, None, None]
    count = int(rng.integers(2, 3 + int(6 * camera.background_clutter)))
    boxes = rng.uniform(0.0, 1.0, (count, 4))
    colors = _hsv_to_rgb(
        np.stack(
            [
                rng.uniform(0, 1, count),
                rng.uniform(0.1, 0.9, count),
                rng.uniform(0.15, 0.95, count),
            ],
            axis=-1,
        )
    )
    for (bx, by, bw, bh), color in zip(boxes, colors):
        x0 = int((bx * 1.2 - 0.2) * w)
        y0 = int((by - 0.1) * h)
        x1 = x0 + int((0.08 + 0.42 * bw) * w)
        y1 = y0 + int((0.05 + 0.35 * bh) * h)
        bg[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = color
    return bg


def _infrared_background(
    rng: np.random.Generator, camera: CameraProfile, h: int, w: int
) -> np.ndarray:
    level = camera.ir_background + float(rng.normal(0.0, 0.02))
    blob = rng.uniform(-0.04, 0.06, (3, 2)).astype(np.float32)
    bg = level + _upsample(blob + 0.5, h, w) - 0.5
    ys, _ = _grid(h, w)
    bg = bg + float(rng.uniform(-0.05, 0.05)) * (ys / h - 0.5)
    return np.clip(bg, 0.0, 1.0).astype(np.float32)


def sample_look(
    rng: np.random.Generator,
    camera: CameraProfile,
    modality: Modality | str,
    image_size: tuple[int, int],
) -> Look:
    """Random appearance conditions for one image (or tracklet) seen by ``camera``."""
    h, w = image_size
    ir = Modality.parse(modality) == Modality.INFRARED
    bg = _infrared_background(rng, camera, h, w) if ir else _visible_background(rng, camera, h, w)
    wb = np.asarray(camera.white_balance, np.float32) * (1.0 + rng.normal(0.0, 0.04, 3)).astype(
        np.float32
    )
    return Look(
        background=bg,
        gain=camera.gain * float(rng.uniform(0.82, 1.18)),
        white_balance=wb,
        light_slope=float(rng.uniform(-0.25, 0.25)),
        contrast=camera.ir_contrast * float(rng.uniform(0.92, 1.08)),
        blur=camera.blur * float(rng.uniform(0.7, 1.3)) + (0.35 if ir else 0.0),
        noise=(camera.ir_noise if ir else 0.012) * float(rng.uniform(0.8, 1.2)),
        occluder_color=tuple(
            float(c) for c in _hsv_to_rgb(rng.uniform((0.0, 0.0, 0.2), (1.0, 0.8, 0.8)))
        ),
        occluder_thermal=float(rng.uniform(0.1, 0.45)),
    )


def _visible_palette(attrs: PersonAttributes, look: Look) -> tuple[np.ndarray, np.ndarray]:
    pal = np.zeros((NUM_PARTS, 3), np.float32)
    pal[SKIN] = attrs.skin
    pal[HAIR] = attrs.hair_color
    pal[UPPER] = attrs.upper.color
    pal[LOWER] = attrs.lower.color
    pal[SHOES] = attrs.shoes
    pal[HAT] = attrs.hat if attrs.hat is not None else 0.0
    pal[BACKPACK] = attrs.backpack if attrs.backpack is not None else 0.0
    pal[BAG] = attrs.shoulder_bag if attrs.shoulder_bag is not None else 0.0
    pal[GLASSES] = (0.06, 0.06, 0.08)
    pal[OCCLUDER] = look.occluder_color
    pal2 = pal.copy()
    pal2[UPPER] = attrs.upper.color_secondary
    pal2[LOWER] = attrs.lower.color_secondary
    return pal, pal2


def _thermal_palette(attrs: PersonAttributes, look: Look) -> tuple[np.ndarray, np.ndarray]:
    pal = np.zeros(NUM_PARTS, np.float32)
    pal[SKIN] = attrs.skin_thermal
    pal[HAIR] = attrs.hair_thermal
    pal[UPPER] = attrs.upper.thermal
    pal[LOWER] = attrs.lower.thermal
    pal[SHOES] = attrs.shoes_thermal
    pal[HAT] = attrs.hat_thermal
    pal[BACKPACK] = attrs.backpack_thermal
    pal[BAG] = attrs.bag_thermal
    pal[GLASSES] = 0.08  # glass is opaque to thermal infrared: glasses look dark
    pal[OCCLUDER] = look.occluder_thermal
    pal2 = pal.copy()
    pal2[UPPER] = attrs.upper.thermal_secondary
    pal2[LOWER] = attrs.lower.thermal_secondary
    return pal, pal2


def _finish(img: np.ndarray, look: Look, rng: np.random.Generator, motion_blur: bool) -> np.ndarray:
    """Blur, sensor noise and quantisation of a visible image (float (H, W, 3) in 0..1)."""
    u8 = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    pil = Image.fromarray(u8)
    if look.blur > 0.05:
        pil = pil.filter(ImageFilter.BoxBlur(look.blur))
    out = np.asarray(pil, dtype=np.float32)
    if motion_blur:
        out = _motion_blur(out)
    out = out + _noise(rng, out.shape, look.noise * 255.0)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Zero-mean sensor noise of standard deviation ``sigma`` (uniform, cheap to draw)."""
    return (rng.random(shape, dtype=np.float32) - 0.5) * np.float32(sigma * math.sqrt(12.0))


def _motion_blur(img: np.ndarray, k: int = 5) -> np.ndarray:
    """Horizontal box blur of width ``k`` (a frame taken while the camera or person moved)."""
    return sum(np.roll(img, s, axis=1) for s in range(-(k // 2), k // 2 + 1)) / float(k)


def colorize(
    layers: Layers,
    attrs: PersonAttributes,
    modality: Modality | str,
    look: Look,
    rng: np.random.Generator,
    motion_blur: bool = False,
) -> np.ndarray:
    """Render ``layers`` as a (H, W, 3) uint8 image; infrared images have 3 equal channels."""
    modality = Modality.parse(modality)
    part, sec = layers.part, layers.secondary
    h, w = part.shape
    person = part > 0
    if modality == Modality.VISIBLE:
        pal, pal2 = _visible_palette(attrs, look)
        img = pal.take(part, axis=0)
        img[sec] = pal2.take(part[sec], axis=0)
        img *= layers.shade[..., None]
        img[~person] = look.background[~person]
        _, xs = _grid(h, w)
        light = look.gain * (1.0 + look.light_slope * (xs / w - 0.5))
        img = img * light[..., None] * look.white_balance
        return _finish(np.clip(img, 0.0, 1.0), look, rng, motion_blur)
    pal, pal2 = _thermal_palette(attrs, look)
    val = pal.take(part)
    val[sec] = pal2.take(part[sec])
    val = val * (0.9 + 0.1 * layers.shade)
    val = np.where(person, val, look.background)
    base = float(np.median(look.background))
    val = base + look.contrast * (val - base)
    col = rng.normal(0.0, 0.008, (1, w)).astype(np.float32)  # column fixed-pattern noise
    val = np.clip(val + col, 0.0, 1.0)
    pil = Image.fromarray(np.clip(val * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if look.blur > 0.05:
        pil = pil.filter(ImageFilter.GaussianBlur(radius=look.blur))
    out = np.asarray(pil, dtype=np.float32)
    if motion_blur:
        out = _motion_blur(out)
    out = out + _noise(rng, out.shape, look.noise * 255.0)
    out = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    return np.repeat(out[..., None], 3, axis=2)


# --- public rendering entry points ------------------------------------------------------


def render_person(
    attrs: PersonAttributes,
    modality: Modality | str,
    pose: Pose | None = None,
    *,
    camera: CameraProfile | None = None,
    rng: np.random.Generator | None = None,
    image_size: tuple[int, int] = (128, 64),
) -> np.ndarray:
    """One (H, W, 3) uint8 image of ``attrs``; random pose and look come from ``rng``."""
    modality = Modality.parse(modality)
    camera = camera or NEUTRAL_CAMERA
    rng = rng if rng is not None else make_rng(attrs.pid, int(modality))
    pose = pose or sample_pose(rng, camera)
    look = sample_look(rng, camera, modality, image_size)
    return colorize(rasterize(attrs, pose, image_size), attrs, modality, look, rng)


def render_pair(
    attrs: PersonAttributes,
    pose: Pose | None = None,
    *,
    visible_camera: CameraProfile | None = None,
    infrared_camera: CameraProfile | None = None,
    rng: np.random.Generator | None = None,
    image_size: tuple[int, int] = (128, 64),
) -> tuple[np.ndarray, np.ndarray]:
    """A pixel-aligned (visible, infrared) pair of the same frame."""
    rng = rng if rng is not None else make_rng(attrs.pid, 7)
    vcam = visible_camera or NEUTRAL_CAMERA
    icam = infrared_camera or vcam
    pose = pose or sample_pose(rng, vcam)
    layers = rasterize(attrs, pose, image_size)
    vlook = sample_look(rng, vcam, Modality.VISIBLE, image_size)
    ilook = sample_look(rng, icam, Modality.INFRARED, image_size)
    return (
        colorize(layers, attrs, Modality.VISIBLE, vlook, rng),
        colorize(layers, attrs, Modality.INFRARED, ilook, rng),
    )


@dataclass(frozen=True)
class TrackletPlan:
    """Per-frame poses plus the occlusion and blur events of one tracklet."""

    poses: tuple[Pose, ...]
    occluder: tuple[float, float, float, float] | None  # fractional box (x0, y0, x1, y1)
    occluded: tuple[bool, ...]
    blurred: tuple[bool, ...]


def plan_tracklet(
    attrs: PersonAttributes,
    rng: np.random.Generator,
    camera: CameraProfile,
    num_frames: int,
    occlusion_prob: float = 0.3,
    blur_prob: float = 0.08,
) -> TrackletPlan:
    """Walking motion: gait at the identity's rate, translation, scale drift, events."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    start = sample_pose(rng, camera)
    start = replace(start, swing=float(rng.uniform(0.7, 1.0)))
    rate = attrs.gait_rate * float(rng.uniform(0.9, 1.1))
    dx_end = start.dx + float(rng.normal(0.0, 0.08))
    scale_end = float(np.clip(start.scale * (1.0 + rng.normal(0.0, 0.06)), 0.75, 1.05))
    poses = []
    for i in range(num_frames):
        t = i / max(num_frames - 1, 1)
        poses.append(
            replace(
                start,
                phase=start.phase + 2.0 * math.pi * rate * i,
                dx=start.dx + t * (dx_end - start.dx),
                scale=start.scale + t * (scale_end - start.scale),
                dy=start.dy + 0.004 * math.sin(4.0 * math.pi * rate * i),
            )
        )
    occluder = None
    occluded = [False] * num_frames
    if rng.random() < occlusion_prob and num_frames >= 3:
        length = int(rng.integers(max(1, num_frames // 5), max(2, num_frames // 2) + 1))
        first = int(rng.integers(0, num_frames - length + 1))
        for i in range(first, first + length):
            occluded[i] = True
        if rng.random() < 0.5:  # a pole or a passer-by at one side
            x0 = float(rng.choice([rng.uniform(-0.1, 0.15), rng.uniform(0.55, 0.8)]))
            occluder = (x0, float(rng.uniform(-0.1, 0.2)), x0 + float(rng.uniform(0.25, 0.45)), 1.1)
        else:  # something low in front of the legs
            occluder = (-0.1, float(rng.uniform(0.62, 0.8)), 1.1, 1.1)
    blurred = [bool(rng.random() < blur_prob) for _ in range(num_frames)]
    return TrackletPlan(tuple(poses), occluder, tuple(occluded), tuple(blurred))


def frame_layers(
    attrs: PersonAttributes, plan: TrackletPlan, i: int, image_size: tuple[int, int]
) -> Layers:
    """Part map of frame ``i`` of a planned tracklet, occluder included."""
    layers = rasterize(attrs, plan.poses[i], image_size)
    if plan.occluded[i] and plan.occluder is not None:
        layers = add_occluder(layers, plan.occluder)
    return layers


def render_tracklet(
    attrs: PersonAttributes,
    modality: Modality | str,
    num_frames: int,
    *,
    camera: CameraProfile | None = None,
    rng: np.random.Generator | None = None,
    image_size: tuple[int, int] = (128, 64),
) -> list[np.ndarray]:
    """Frames of one walking tracklet in one modality."""
    modality = Modality.parse(modality)
    camera = camera or NEUTRAL_CAMERA
    rng = rng if rng is not None else make_rng(attrs.pid, 11, int(modality))
    plan = plan_tracklet(attrs, rng, camera, num_frames)
    look = sample_look(rng, camera, modality, image_size)
    return [
        colorize(
            frame_layers(attrs, plan, i, image_size), attrs, modality, look, rng, plan.blurred[i]
        )
        for i in range(num_frames)
    ]


def render_tracklet_pair(
    attrs: PersonAttributes,
    num_frames: int,
    *,
    visible_camera: CameraProfile | None = None,
    infrared_camera: CameraProfile | None = None,
    rng: np.random.Generator | None = None,
    image_size: tuple[int, int] = (128, 64),
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Pixel-aligned visible and infrared frames of one tracklet (BUPTCampus style)."""
    vcam = visible_camera or NEUTRAL_CAMERA
    icam = infrared_camera or vcam
    rng = rng if rng is not None else make_rng(attrs.pid, 13)
    plan = plan_tracklet(attrs, rng, vcam, num_frames)
    vlook = sample_look(rng, vcam, Modality.VISIBLE, image_size)
    ilook = sample_look(rng, icam, Modality.INFRARED, image_size)
    vis, ir = [], []
    for i in range(num_frames):
        layers = frame_layers(attrs, plan, i, image_size)
        vis.append(colorize(layers, attrs, Modality.VISIBLE, vlook, rng, plan.blurred[i]))
        ir.append(colorize(layers, attrs, Modality.INFRARED, ilook, rng, plan.blurred[i]))
    return vis, ir
