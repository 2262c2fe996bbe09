"""Procedural face dataset written in the official CelebA layout (the embedded default dataset).

Faces are drawn with PIL at twice the target size and downsampled (antialiasing). Each identity
has fixed traits (sex, age, face shape, skin, hair, beard, brows, nose, glasses); each image
re-draws expression, accessories and make-up and adds pose, lighting, background and JPEG jitter.
Every label is drawn into the picture, and attributes are correlated roughly as in real CelebA
(notably women smile slightly more often, so a Smiling model's features leak Male).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..progress import progress_bar

CELEBA_ATTRIBUTES: tuple[str, ...] = tuple(
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose "
    "Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee "
    "Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard "
    "Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair "
    "Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young".split()
)

Color = tuple[int, int, int]
_HAIR_NAMES = ("Black_Hair", "Blond_Hair", "Brown_Hair", "auburn", "strawberry")
_HAIR_RGB: dict[str, Color] = {"Black_Hair": (24, 21, 21), "Blond_Hair": (224, 188, 118),
                               "Brown_Hair": (110, 70, 38), "Gray_Hair": (176, 174, 172),
                               "auburn": (138, 52, 26), "strawberry": (182, 108, 70)}
_HAIR_P = {True: (0.34, 0.03, 0.22, 0.20, 0.21), False: (0.22, 0.28, 0.23, 0.14, 0.13)}
_LIPSTICK: tuple[Color, ...] = ((178, 28, 44), (204, 58, 82), (128, 28, 60), (214, 86, 98))
_IRIS: tuple[Color, ...] = ((70, 45, 25), (40, 28, 20), (60, 100, 150), (70, 110, 70))


def _mix(a: Color, b: Color, t: float) -> Color:
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))  # type: ignore[return-value]


def _jit(rng: np.random.Generator, c: Color, s: float) -> Color:
    return tuple(int(np.clip(v + rng.normal(0, s), 0, 255)) for v in c)  # type: ignore[return-value]


@dataclass
class _Person:
    a: dict[str, bool]  # identity-level attributes
    skin: Color
    hair: Color
    brow: Color
    iris: Color
    frame: Color
    sun: bool  # sunglasses
    hair_len: float  # bottom of hair in face half-heights below the face centre (<0: short)
    style: str  # straight | wavy | curly
    hairline: float
    fw: float  # face half-width / unit
    fh: float  # face half-height / unit
    jaw: float  # superellipse exponent of the lower face (higher: squarer jaw)
    bangs: bool
    latent: float  # skin clarity (drawn as blemishes), feeds Attractive


def _person(rng: np.random.Generator) -> _Person:
    def b(p: float) -> bool:
        return bool(rng.random() < p)

    m = b(0.42)
    y = b(0.65 if m else 0.85)
    a = {"Male": m, "Young": y}
    a["Bald"] = m and b(0.02 if y else 0.18)
    a["Receding_Hairline"] = not a["Bald"] and b((0.10 if y else 0.30) if m else 0.03)
    hc = "Gray_Hair" if b(0.01 if y else 0.20) else _HAIR_NAMES[rng.choice(5, p=_HAIR_P[m])]
    for k in ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair"):
        a[k] = hc == k
    a["Chubby"] = b((0.07 if m else 0.035) * (1.0 if y else 2.0))
    a["Double_Chin"] = b(0.5 if a["Chubby"] else 0.01 if y else 0.10)
    a["Oval_Face"] = b(0.20 if m else 0.36)
    a["Pale_Skin"] = b(0.02 if m else 0.06)
    a["Bushy_Eyebrows"] = b(0.26 if m else 0.06)
    a["Arched_Eyebrows"] = b(0.08 if m else 0.45)
    a["Big_Nose"] = b(0.38 if m else 0.12)
    a["Pointy_Nose"] = b(0.10 if a["Big_Nose"] else 0.25 if m else 0.38)
    a["Big_Lips"] = b(0.18 if m else 0.28)
    a["Bags_Under_Eyes"] = b(0.12 if y else 0.45)
    # beard kind: none, stubble, goatee, goatee+moustache, full, moustache
    beard = int(rng.choice(6, p=(0.55, 0.22, 0.08, 0.06, 0.05, 0.04))) if m else 0
    a["5_o_Clock_Shadow"] = beard in (1, 4)
    a["Goatee"] = beard in (2, 3, 4)
    a["Mustache"] = beard in (3, 4, 5)
    a["Sideburns"] = beard == 4 or (m and b(0.06))
    a["No_Beard"] = beard == 0 and not a["Sideburns"]
    a["Eyeglasses"] = b(0.075)
    length = rng.choice(3, p=(0.85, 0.13, 0.02) if m else (0.05, 0.30, 0.65))
    style = ("straight", "wavy", "curly")[rng.choice(3, p=(0.12, 0.18, 0.70) if m else (0.30, 0.45, 0.25))]
    a["Straight_Hair"] = style == "straight" and not a["Bald"]
    a["Wavy_Hair"] = style == "wavy" and not a["Bald"]
    if a["Pale_Skin"]:
        skin = _jit(rng, (248, 228, 216), 3)
    else:
        skin = _jit(rng, _mix((96, 62, 44), (226, 184, 154), float(rng.beta(2.2, 1.4))), 5)
    hair = _jit(rng, _HAIR_RGB[hc], 7)
    return _Person(
        a=a, skin=skin, hair=hair, brow=_mix(hair, (58, 42, 32), 0.5 if hc in ("Blond_Hair", "Gray_Hair") else 0.1),
        iris=_IRIS[rng.integers(4)], frame=_jit(rng, (40, 36, 34) if b(0.7) else (150, 140, 120), 10), sun=b(0.2),
        hair_len=(-0.3, 1.0, 1.9)[length] + rng.normal(0, 0.12), style=style, hairline=0.55 + rng.normal(0, 0.04),
        fw=0.29 + 0.024 * m + 0.04 * a["Chubby"] + rng.normal(0, 0.008),
        fh=0.40 + 0.03 * a["Oval_Face"] - 0.01 * a["Chubby"] + rng.normal(0, 0.01),
        jaw=2.0 + 0.9 * m + 0.6 * a["Chubby"] - 0.3 * a["Oval_Face"] + rng.normal(0, 0.15),
        bangs=not (a["Bald"] or a["Receding_Hairline"]) and b(0.10 if m else 0.27), latent=float(rng.normal()))


def _image_attrs(rng: np.random.Generator, p: _Person) -> dict[str, bool]:
    def b(q: float) -> bool:
        return bool(rng.random() < q)

    m, y = p.a["Male"], p.a["Young"]
    s = b(0.41 if m else 0.53)
    mk = b(0.005) if m else b(0.68 if y else 0.45)
    hat_ok = not (p.a["Bald"] or p.a["Receding_Hairline"])  # a hat would hide the scalp
    glasses = p.a["Eyeglasses"] and b(0.85)  # sometimes taken off
    a = dict(p.a, Smiling=s, Mouth_Slightly_Open=b(0.75 if s else 0.2), High_Cheekbones=b(0.72 if s else 0.18),
             Heavy_Makeup=mk, Wearing_Lipstick=b(0.97 if mk else 0.003 if m else 0.6),
             Wearing_Hat=hat_ok and b(0.055), Wearing_Earrings=b(0.02 if m else 0.3),
             Wearing_Necktie=m and b(0.17), Wearing_Necklace=b(0.01 if m else 0.2), Blurry=b(0.05),
             Bangs=p.bangs and b(0.85), Narrow_Eyes=not (glasses and p.sun) and b(0.16 if s else 0.07),
             Rosy_Cheeks=b(0.03 if m else 0.16 if mk else 0.06), Eyeglasses=glasses)
    logit = (-0.75 + 1.3 * y - 0.7 * m - 1.5 * p.a["Chubby"] - 0.6 * p.a["Big_Nose"] - 0.5 * p.a["Bags_Under_Eyes"]
             + 0.6 * mk + 0.3 * s - 0.8 * (p.a["Bald"] or p.a["Gray_Hair"]) + 0.8 * p.latent)
    a["Attractive"] = b(1.0 / (1.0 + math.exp(-logit)))
    return a


def _superellipse(cx: float, cy: float, rx: float, ry: float, e_up: float, e_low: float,
                  n: int = 48) -> list[tuple[float, float]]:
    pts = []
    for t in np.linspace(0.0, 2 * math.pi, n, endpoint=False):
        c, s = math.cos(t), math.sin(t)
        e = e_low if s > 0 else e_up  # image y points down: s > 0 is the lower half
        pts.append((cx + rx * math.copysign(abs(c) ** (2 / e), c), cy + ry * math.copysign(abs(s) ** (2 / e), s)))
    return pts


def _hair_poly(p: _Person, cx: float, cy: float, fw: float, fh: float, ph: float) -> list[tuple[float, float]]:
    amp, k = {"straight": (0.0, 0), "wavy": (0.035, 9), "curly": (0.03, 26)}[p.style]
    rx, ry = fw * 1.13, fh * 1.12
    t0 = 0.35 if p.hair_len < 0 else 0.0
    ts = np.linspace(math.pi + t0, 2 * math.pi - t0, 33)
    pts = [(cx + rx * r * math.cos(t), cy + ry * r * math.sin(t)) for t, r in zip(ts, 1 + amp * np.sin(k * ts + ph))]
    if p.hair_len < 0:
        return pts
    bottom, period = p.hair_len * fh, fh * (0.45 if p.style == "wavy" else 0.15)
    wx = {"straight": 0.0, "wavy": 0.09, "curly": 0.06}[p.style] * fw
    ys = np.linspace(0.0, bottom, 12)
    right = [(cx + rx * (1 + 0.12 * v / bottom) + wx * math.sin(v / period + ph), cy + v) for v in ys]
    left = [(cx - rx * (1 + 0.12 * v / bottom) + wx * math.sin(v / period + ph + 1), cy + v) for v in ys[::-1]]
    return pts + right + left


def _draw(rng: np.random.Generator, p: _Person, a: dict[str, bool], h2: int, w2: int) -> Image.Image:
    bg = _mix(tuple(int(v) for v in rng.integers(20, 236, 3)), (128, 128, 128), 0.35)  # type: ignore[arg-type]
    im = Image.new("RGB", (w2, h2), bg)  # type: ignore[arg-type]
    d = ImageDraw.Draw(im)
    for _ in range(4):  # background texture
        x, y, r = rng.random() * w2, rng.random() * h2, (0.2 + 0.4 * rng.random()) * w2
        d.ellipse([x - r, y - r, x + r, y + r], fill=_mix(bg, _jit(rng, bg, 60), 0.35))  # type: ignore[arg-type]
    u = min(w2, h2 / 1.225) * math.exp(rng.normal(0, 0.04))
    fw, fh = p.fw * u, p.fh * u
    cx = w2 / 2 + rng.normal(0, 0.025) * w2
    ye = 0.41 * h2 + rng.normal(0, 0.02) * h2
    cy = ye + 0.08 * fh
    fx = cx + float(np.clip(rng.normal(0, 0.05), -0.12, 0.12)) * fw  # yaw: features shift inside the outline

    def lw(f: float) -> int:
        return max(1, round(f * fh))

    def ell(x: float, y: float, rx: float, ry: float, **kw: object) -> None:
        d.ellipse([x - rx, y - ry, x + rx, y + ry], **kw)  # type: ignore[arg-type]

    skin, shade, dark = p.skin, _mix(p.skin, (40, 20, 15), 0.25), _mix(p.skin, (20, 10, 10), 0.6)
    cloth = _jit(rng, (90, 90, 100), 55)
    ell(cx, cy + 2.3 * fh, 2.1 * fw, 0.95 * fh, fill=cloth)  # shoulders
    if not a["Bald"]:
        d.polygon(_hair_poly(p, cx, cy, fw, fh, rng.random() * 6.28), fill=p.hair)
        if p.hair_len > 0 and p.style != "curly":  # strands
            for sgn in (-1, 1):
                for j in range(3):
                    x0 = cx + sgn * fw * (1.0 + 0.07 * j)
                    ys = np.linspace(cy - 0.3 * fh, cy + p.hair_len * fh, 8)
                    amp = 0.05 * fw if p.style == "wavy" else 0.0
                    d.line([(x0 + amp * math.sin(v / (0.3 * fh) + j), v) for v in ys],
                           fill=_mix(p.hair, (0, 0, 0), 0.3), width=lw(0.02))
    else:
        for sgn in (-1, 1):
            ell(cx + sgn * 0.98 * fw, cy - 0.15 * fh, 0.14 * fw, 0.3 * fh, fill=p.hair)
    nw = (0.58 if p.a["Male"] else 0.48) * fw
    d.rectangle([cx - nw, cy + 0.5 * fh, cx + nw, cy + 1.5 * fh], fill=shade)
    if a["Wearing_Necktie"]:
        d.polygon([(cx - 0.5 * fw, cy + 1.42 * fh), (cx + 0.5 * fw, cy + 1.42 * fh), (cx, cy + 2.3 * fh)],
                  fill=(236, 236, 232))
        tie = _jit(rng, (120, 30, 40), 60)
        d.polygon([(cx - 0.09 * fw, cy + 1.4 * fh), (cx + 0.09 * fw, cy + 1.4 * fh), (cx + 0.17 * fw, cy + 2.2 * fh),
                   (cx, cy + 2.4 * fh), (cx - 0.17 * fw, cy + 2.2 * fh)], fill=tie)
    else:
        d.chord([cx - 0.6 * fw, cy + 1.1 * fh, cx + 0.6 * fw, cy + 1.7 * fh], 0, 180, fill=shade)
    if a["Wearing_Necklace"]:
        pts = [(cx + t * 0.5 * fw, cy + 1.3 * fh + 0.2 * fh * (1 - t * t)) for t in np.linspace(-1, 1, 9)]
        col = (236, 200, 90) if rng.random() < 0.6 else (236, 234, 226)
        d.line(pts, fill=col, width=lw(0.035))
        ell(cx, cy + 1.55 * fh, 0.07 * fw, 0.07 * fw, fill=col)
    for sgn in (-1, 1):  # ears
        ell(cx + sgn * 0.98 * fw, cy - 0.02 * fh, 0.12 * fw, 0.2 * fh, fill=shade)
    face = _superellipse(cx, cy, fw, fh, 2.3, p.jaw)
    d.polygon(face, fill=skin)
    if a["Double_Chin"]:
        d.arc([cx - 0.5 * fw, cy + 0.78 * fh, cx + 0.5 * fw, cy + 1.12 * fh], 20, 160, fill=dark, width=lw(0.03))
    beard = _mix(p.hair, (30, 25, 20), 0.4)
    if a["5_o_Clock_Shadow"]:  # stubble, or a full beard when combined with goatee + moustache
        full = a["Goatee"] and a["Mustache"]
        jaw = [q for q in face if q[1] > cy + (0.05 if full else 0.2) * fh]
        d.polygon(jaw, fill=_mix(skin, beard, 0.6 if full else 0.3))
    if not p.a["Young"]:  # wrinkles
        for dy in (0.5, 0.62):
            d.arc([fx - 0.4 * fw, cy - (dy + 0.08) * fh, fx + 0.4 * fw, cy - (dy - 0.08) * fh], 200, 340,
                  fill=shade, width=lw(0.02))
    for _ in range(max(0, int(-p.latent * 3))):  # blemishes
        ell(fx + (rng.random() - 0.5) * 1.1 * fw, cy + rng.random() * 0.5 * fh, 0.025 * fw, 0.025 * fw, fill=shade)
    if a["Sideburns"]:
        for sgn in (-1, 1):
            x0, x1 = sorted((cx + sgn * 0.86 * fw, cx + sgn * 1.0 * fw))
            d.rectangle([x0, cy - 0.35 * fh, x1, cy + 0.25 * fh], fill=beard)
    if not a["Bald"]:  # front hair: hairline chord (straight fringe for bangs)
        h = 0.28 if a["Bangs"] else 0.8 if a["Receding_Hairline"] else p.hairline
        ang = math.degrees(math.asin(h))
        d.chord([cx - 1.04 * fw, cy - 1.04 * fh, cx + 1.04 * fw, cy + 1.04 * fh], 180 + ang, 360 - ang, fill=p.hair)
    else:
        ell(cx - 0.3 * fw, cy - 0.8 * fh, 0.2 * fw, 0.08 * fh, fill=_mix(skin, (255, 255, 255), 0.3))  # scalp shine
    # eyes and brows
    ry = (0.04 if a["Narrow_Eyes"] else 0.085) * fh
    for sgn in (-1, 1):
        ex = fx + sgn * 0.4 * fw
        if a["Heavy_Makeup"]:
            ell(ex, ye - 0.07 * fh, 0.22 * fw, 0.11 * fh, fill=_mix(skin, (110, 60, 120), 0.55))
        if a["Bags_Under_Eyes"]:
            d.arc([ex - 0.18 * fw, ye - 0.02 * fh, ex + 0.18 * fw, ye + 0.16 * fh], 20, 160, fill=dark, width=lw(0.03))
        liner = lw(0.04 if a["Heavy_Makeup"] else 0.015)
        ell(ex, ye, 0.17 * fw, ry, fill=(238, 236, 230), outline=(30, 20, 20), width=liner)
        ell(ex, ye, 0.075 * fw, min(ry, 0.075 * fw), fill=p.iris)
        ell(ex, ye, 0.03 * fw, min(ry, 0.03 * fw), fill=(10, 8, 8))
        yb, bw = ye - 0.2 * fh, lw(0.075 if a["Bushy_Eyebrows"] else 0.045 if p.a["Male"] else 0.03)
        if a["Arched_Eyebrows"]:
            brow = [(ex - sgn * 0.2 * fw, yb + 0.03 * fh), (ex + sgn * 0.02 * fw, yb - 0.06 * fh),
                    (ex + sgn * 0.22 * fw, yb + 0.05 * fh)]
        else:
            brow = [(ex - sgn * 0.2 * fw, yb), (ex + sgn * 0.22 * fw, yb + 0.01 * fh)]
        d.line(brow, fill=p.brow, width=bw, joint="curve")
        if a["Eyeglasses"]:
            box = [ex - 0.26 * fw, ye - 0.14 * fh, ex + 0.26 * fw, ye + 0.13 * fh]
            lens = (25, 25, 30) if p.sun else None
            d.rounded_rectangle(box, radius=0.08 * fw, outline=p.frame, width=lw(0.03), fill=lens)
            temple = [(ex + sgn * 0.26 * fw, ye - 0.05 * fh), (cx + sgn * 0.99 * fw, ye - 0.02 * fh)]
            d.line(temple, fill=p.frame, width=lw(0.03))
    if a["Eyeglasses"]:
        d.line([(fx - 0.14 * fw, ye - 0.05 * fh), (fx + 0.14 * fw, ye - 0.05 * fh)], fill=p.frame, width=lw(0.03))
    # nose
    ny, nosew = cy + 0.3 * fh, (0.17 if a["Big_Nose"] else 0.1) * fw
    if a["Pointy_Nose"]:
        d.polygon([(fx, ye + 0.02 * fh), (fx - nosew, ny), (fx, ny + 0.09 * fh), (fx + nosew, ny)], fill=shade)
    else:
        d.polygon([(fx, ye + 0.02 * fh), (fx - 0.6 * nosew, ny), (fx + 0.6 * nosew, ny)], fill=shade)
        ell(fx, ny, nosew * 1.1, 0.06 * fh * (1.4 if a["Big_Nose"] else 1), fill=shade)
    for sgn in (-1, 1):
        ell(fx + sgn * nosew * 0.55, ny + 0.02 * fh, nosew * 0.3, 0.025 * fh, fill=dark)
    # cheeks
    for sgn in (-1, 1):
        if a["High_Cheekbones"]:
            ell(fx + sgn * 0.45 * fw, cy + 0.08 * fh, 0.16 * fw, 0.07 * fh, fill=_mix(skin, (255, 255, 255), 0.25))
            fold = [(fx + sgn * 0.72 * fw, cy + 0.12 * fh), (fx + sgn * 0.4 * fw, cy + 0.38 * fh)]
            d.line(fold, fill=shade, width=lw(0.03))
        if a["Rosy_Cheeks"]:
            ell(fx + sgn * 0.45 * fw, cy + 0.22 * fh, 0.17 * fw, 0.11 * fh, fill=_mix(skin, (226, 88, 108), 0.45))
        if not p.a["Young"]:
            d.line([(fx + sgn * 0.2 * fw, ny), (fx + sgn * 0.38 * fw, cy + 0.6 * fh)], fill=shade, width=lw(0.02))
    # mouth
    ym, mw = cy + 0.56 * fh, (0.42 if a["Smiling"] else 0.3) * fw
    lip = _LIPSTICK[rng.integers(4)] if a["Wearing_Lipstick"] else _mix(skin, (168, 78, 78), 0.35)
    lh = (0.075 if a["Big_Lips"] else 0.045) * fh
    mouth = (60, 18, 24)
    if a["Smiling"] and a["Mouth_Slightly_Open"]:
        y0, y1 = ym - 0.12 * fh, ym + 0.14 * fh + lh
        d.chord([fx - mw, y0, fx + mw, y1], 0, 180, fill=lip)
        d.chord([fx - mw + lh, y0 + lh, fx + mw - lh, y1 - lh], 0, 180, fill=mouth)
        yc = (y0 + y1) / 2
        d.chord([fx - mw + lh, yc - 0.08 * fh, fx + mw - lh, yc + 0.08 * fh], 0, 180, fill=(236, 232, 220))
        d.line([(fx - mw, yc), (fx + mw, yc)], fill=lip, width=max(1, round(lh)))
    elif a["Smiling"]:
        box = [fx - mw, ym - 0.16 * fh, fx + mw, ym + 0.06 * fh]
        d.arc(box, 15, 165, fill=lip, width=max(1, round(2 * lh)))
        d.arc(box, 15, 165, fill=mouth, width=lw(0.015))
    elif a["Mouth_Slightly_Open"]:
        ell(fx, ym, 0.8 * mw, lh + 0.05 * fh, fill=lip)
        ell(fx, ym, 0.5 * mw, 0.035 * fh, fill=mouth)
    else:
        ell(fx, ym, 0.85 * mw, lh, fill=lip)
        d.line([(fx - 0.85 * mw, ym), (fx + 0.85 * mw, ym)], fill=mouth, width=lw(0.015))
    if a["Mustache"]:
        ell(fx, ym - 0.1 * fh, 1.05 * mw, 0.05 * fh, fill=beard)
    if a["Goatee"]:
        ell(fx, ym + 0.27 * fh, 0.16 * fw, 0.17 * fh, fill=beard)
    if a["Wearing_Earrings"]:
        col = (236, 200, 90) if rng.random() < 0.6 else (230, 230, 236)
        for sgn in (-1, 1):
            ell(cx + sgn * 0.98 * fw, cy + 0.2 * fh, 0.045 * fw, 0.045 * fw, fill=col)
            ell(cx + sgn * 0.98 * fw, cy + 0.3 * fh, 0.035 * fw, 0.05 * fw, fill=col)
    if a["Wearing_Hat"]:
        hat = _jit(rng, (80, 70, 60), 60)
        yh = cy - 0.5 * fh
        d.chord([cx - 1.12 * fw, yh - 0.8 * fh, cx + 1.12 * fw, yh + 0.8 * fh], 180, 360, fill=hat)
        d.rectangle([cx - 1.12 * fw, yh - 0.18 * fh, cx + 1.12 * fw, yh - 0.04 * fh], fill=_mix(hat, (0, 0, 0), 0.4))
        ell(cx, yh, 1.45 * fw, 0.1 * fh, fill=hat)
    angle = float(np.clip(rng.normal(0, 4.0), -10, 10))
    im = im.rotate(angle, resample=Image.Resampling.BILINEAR, center=(cx, ye), fillcolor=bg)  # type: ignore[arg-type]
    return im


def _finish(rng: np.random.Generator, im: Image.Image, a: dict[str, bool], h: int, w: int,
            grid: tuple[np.ndarray, np.ndarray]) -> Image.Image:
    if a["Blurry"]:
        im = im.filter(ImageFilter.GaussianBlur(radius=im.width / 64 * (1 + rng.random())))
    x = np.asarray(im.resize((w, h), Image.Resampling.LANCZOS), dtype=np.float32)
    phi = rng.random() * 2 * math.pi
    gain = 1 + rng.uniform(0, 0.35) * (grid[0] * math.cos(phi) + grid[1] * math.sin(phi))
    x = (x - 128) * math.exp(rng.normal(0, 0.1)) + 128 + rng.normal(0, 12)
    x = x * gain[..., None] * (1 + rng.normal(0, 0.04, 3)) + rng.normal(0, 2.5, x.shape)
    return Image.fromarray(np.clip(x, 0, 255).astype(np.uint8))


def render_synthetic_celeba(out: Path, n_images: int = 4000, n_identities: int = 400,
                            size: tuple[int, int] = (109, 89), seed: int = 0, progress: bool = False) -> Path:
    """Render the face set into `out` (CelebA layout) and return `out`.

    Writes ``img_align_celeba/NNNNNN.jpg``, ``list_attr_celeba.txt`` (official format, CRLF),
    ``identity_CelebA.txt`` and ``README.txt``. ``size`` is (height, width). Deterministic in ``seed``.
    """
    if n_images < 1 or n_identities < 1:
        raise ValueError("n_images and n_identities must be positive")
    h, w = size
    out = Path(out)
    img_dir = out / "img_align_celeba"
    img_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_id = min(n_identities, n_images)
    people = [_person(rng) for _ in range(n_id)]
    floor = 2 if n_images >= 2 * n_id else 1
    counts = floor + rng.multinomial(n_images - floor * n_id, np.full(n_id, 1.0 / n_id))
    ids = np.repeat(np.arange(n_id), counts)
    rng.shuffle(ids)
    yy, xx = np.meshgrid(np.linspace(-0.5, 0.5, h, dtype=np.float32), np.linspace(-0.5, 0.5, w, dtype=np.float32),
                         indexing="ij")
    attr_lines = [str(n_images), " ".join(CELEBA_ATTRIBUTES) + " "]
    id_lines = []
    bar = progress_bar(total=n_images, desc="synthetic CelebA", unit="img", disable=not progress)
    for i, pid in enumerate(ids, start=1):
        name = f"{i:06d}.jpg"
        a = _image_attrs(rng, people[pid])
        im = _draw(rng, people[pid], a, 2 * h, 2 * w)
        _finish(rng, im, a, h, w, (xx, yy)).save(img_dir / name, quality=int(rng.integers(86, 95)))
        attr_lines.append(name + " " + " ".join(f"{1 if a[k] else -1:2d}" for k in CELEBA_ATTRIBUTES))
        id_lines.append(f"{name} {pid + 1}")
        bar.update(1)
    bar.close()
    (out / "list_attr_celeba.txt").write_bytes(("\r\n".join(attr_lines) + "\r\n").encode())
    (out / "identity_CelebA.txt").write_bytes(("\n".join(id_lines) + "\n").encode())
    (out / "README.txt").write_text(
        f"Synthetic face dataset in the CelebA layout, generated procedurally by deepobfuscator.data.synth "
        f"(numpy + PIL drawing, no real people): {n_images} images of {n_id} synthetic identities at {h}x{w} "
        f"pixels, seed {seed}. Each identity has fixed traits (sex, age, face shape, skin, hair, beard, brows, "
        f"nose, glasses) and each image redraws expression, make-up and accessories with pose, lighting, "
        f"background and JPEG jitter; all 40 CelebA attribute labels describe what is drawn and are "
        f"correlated roughly as in real CelebA.\n", encoding="utf-8")
    return out
