"""Draw the example key frames (flat colours, black outlines, 512x320), so the examples are our own.

Run: .venv/bin/python examples/draw_keyframes.py
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

W, H = 512, 320
OUTLINE = (20, 20, 20)
HERE = Path(__file__).parent


def scene() -> tuple[Image.Image, ImageDraw.ImageDraw]:
    img = Image.new("RGB", (W, H), (150, 205, 240))
    d = ImageDraw.Draw(img)
    d.rectangle([0, 230, W, H], fill=(120, 190, 90), outline=OUTLINE, width=4)
    d.ellipse([420, 20, 490, 90], fill=(255, 215, 70), outline=OUTLINE, width=4)
    return img, d


def ball(d: ImageDraw.ImageDraw, cx: int, cy: int, r: int = 34, squash: float = 1.0) -> None:
    rx, ry = r / squash**0.5, r * squash**0.5
    d.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=(220, 50, 50), outline=OUTLINE, width=5)
    d.arc([cx - rx * 0.6, cy - ry * 0.7, cx + rx * 0.2, cy], 180, 260, fill=(255, 255, 255), width=5)


def flag(d: ImageDraw.ImageDraw, wave: float) -> None:
    d.rectangle([150, 60, 160, 240], fill=(140, 100, 60), outline=OUTLINE, width=3)
    top = [(160, 62), (230, 62 + 12 * wave), (300, 70)]
    bottom = [(300, 140), (230, 130 + 12 * wave), (160, 132)]
    d.polygon(top + bottom, fill=(60, 90, 200), outline=OUTLINE, width=4)


def main() -> None:
    for name, cx, cy, squash in [("0.png", 90, 196, 1.25), ("1.png", 300, 90, 0.9), ("2.png", 440, 196, 1.25)]:
        img, d = scene()
        ball(d, cx, cy, squash=squash)
        img.save(HERE / "bouncing-ball" / name)
    for name, wave in [("0.png", -1.0), ("1.png", 1.0)]:
        img, d = scene()
        flag(d, wave)
        img.save(HERE / "waving-flag" / name)
    (HERE / "bouncing-ball" / "prompt.txt").write_text("a red cartoon ball bouncing over a meadow\n")
    (HERE / "waving-flag" / "prompt.txt").write_text("a blue flag waving in the wind, cartoon\n")


if __name__ == "__main__":
    main()
