"""The docs' labelled picture grids (docs/color.png, docs/masks.png): one home for the layout.

Imported by the example scripts beside it (run as ``python scripts/<name>.py``).
"""

from PIL import Image, ImageDraw, ImageFont

from jaxcombine.io import images


def save_grid(panels, cols, out, pad=4, label=18):
    """``panels``: (name, RGB 0-255 array) of one size, ``cols`` per row, each labelled
    below; saved as a 256-colour PNG (small enough for a README)."""
    h, w = panels[0][1].shape[:2]
    rows = -(-len(panels) // cols)
    sheet = Image.new("RGB", (cols * (w + pad) + pad, rows * (h + pad + label) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=14)
    for i, (name, img) in enumerate(panels):
        x, y = pad + (i % cols) * (w + pad), pad + (i // cols) * (h + pad + label)
        sheet.paste(Image.fromarray(images.to_uint8(img)), (x, y))
        draw.text((x + 2, y + h + 1), name, fill="black", font=font)
    sheet.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG).save(
        out, optimize=True
    )
    print(f"wrote {out}: {sheet.size[0]}x{sheet.size[1]}")
