"""Colour-profile round trips, and the size and time of indexed PNGs against their bounds.

    python bench/colour_and_palette.py [--hw2 DIR]

1. An sRGB photo (scikit-image's astronaut and coffee) is converted to Adobe RGB
   (Debian's icc-profiles-free) and saved with that profile; both files are
   compressed (k=256) and decompressed to .png and .gif.  Each output is seen as a
   colour-managed viewer sees it (converted through its embedded profile to sRGB)
   and compared with the sRGB photo: mean absolute difference in levels.
2. Codebooks (k=20, RGB and with an alpha ramp) of the sample and of the sample
   upscaled to 10.7 MP (smooth, and with noise as bench.py's): the indexed PNG's size
   (hw2's --indexed) against Pillow's
   optimize=True on the same palette image, and write_image's time against writing the
   decoded pixels as today (RGB[A] PNG).

``--hw2 DIR`` runs part 1 with the hw2.py in DIR (say, an older checkout).
"""
import argparse
import io
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image, ImageCms

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import codec  # noqa: E402

ADOBE = "/usr/share/color/icc/compatibleWithAdobeRGB1998.icc"
SRGB = ImageCms.createProfile("sRGB")


def as_viewed(path):
    """Pixels of ``path`` (RGB) as a colour-managed viewer shows them: in sRGB."""
    with Image.open(path) as image:
        rgb, icc = image.convert("RGB"), image.info.get("icc_profile")
    if icc:
        rgb = ImageCms.profileToProfile(rgb, ImageCms.ImageCmsProfile(io.BytesIO(icc)), SRGB)
    return np.asarray(rgb, dtype=np.float64)


def round_trips(hw2_dir, folder):
    import skimage.data
    hw2 = [sys.executable, os.path.join(hw2_dir, "hw2.py")]
    print("photo       source     output  diff from the sRGB photo (levels)")
    for name in ("astronaut", "coffee"):
        plain = Image.fromarray(getattr(skimage.data, name)())
        files = {"sRGB": os.path.join(folder, name + ".png"),
                 "Adobe RGB": os.path.join(folder, name + "_adobe.png")}
        plain.save(files["sRGB"])
        ImageCms.profileToProfile(plain, SRGB, ADOBE).save(
            files["Adobe RGB"], icc_profile=open(ADOBE, "rb").read())
        original = np.asarray(plain, dtype=np.float64)
        for kind, path in files.items():
            book = path + ".npz"
            subprocess.run(hw2 + ["--compress", path, "--clusters", "256", "--output", book],
                           check=True, capture_output=True)
            for ext in ("png", "gif"):
                out = f"{path}.{ext}"
                subprocess.run(hw2 + ["--decompress", book, "--output", out],
                               check=True, capture_output=True)
                diff = np.abs(as_viewed(out) - original).mean()
                print(f"{name:11s} {kind:10s} .{ext:6s} {diff:6.2f}")


def best_time(function, repeats=3):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def photos():
    """The sample, and upscaled to 10.7 MP: smooth (bicubic), and with noise as bench.py's."""
    sample = Image.open(os.path.join(ROOT, "samples", "rocket.jpg")).convert("RGB")
    smooth = sample.resize((4000, 2670), Image.BICUBIC)
    noise = np.random.default_rng(0).normal(0.0, 2.0, (2670, 4000, 3))
    noisy = np.clip(np.rint(np.asarray(smooth) + noise), 0, 255).astype(np.uint8)
    return {"sample 0.27 MP": sample, "10.7 MP + noise": Image.fromarray(noisy),
            "10.7 MP smooth": smooth}


def with_alpha(image):
    """``image`` with an alpha ramp from 0 (left) to 255 (three quarters across)."""
    ramp = np.linspace(0, 340, image.size[0]).clip(0, 255).astype(np.uint8)
    image = image.copy()
    image.putalpha(Image.fromarray(np.tile(ramp, (image.size[1], 1))))
    return image


def palettes(folder, level=None):
    if level is not None:  # what another zlib level would give (bench/NOTES.md's table)
        codec.PALETTE_SAVE_OPTIONS["PNG"] = {"compress_level": level}
    print("\ncodebook (k=20)         PNG bytes  /optimize=True  write time indexed / today")
    for name, photo in photos().items():
        for mode, image in (("RGB", photo), ("RGBA", with_alpha(photo))):
            source, book = os.path.join(folder, "p.png"), os.path.join(folder, "p.npz")
            image.save(source, compress_level=1)
            subprocess.run([sys.executable, os.path.join(ROOT, "hw2.py"), "--compress", source,
                            "--clusters", "20", "--output", book], check=True, capture_output=True)
            assignments, means, img_shape = codec.read_codebook(book)
            pixels = codec.decode(assignments, means, img_shape)
            out = os.path.join(folder, "out.png")
            today = best_time(lambda: codec.write_image(out, Image.fromarray(pixels)))
            indexed = best_time(lambda: codec.write_image(
                out, codec.indexed_image(assignments, means, img_shape, "PNG", ("PNG",))))
            size = os.path.getsize(out)
            optimized = io.BytesIO()
            codec.indexed_image(assignments, means, img_shape, "PNG", ("PNG",)).save(
                optimized, format="PNG", optimize=True)
            print(f"{name:16s} {mode:4s} {size:>11,d}  {size / len(optimized.getvalue()):6.3f}"
                  f"          {indexed:.2f} s / {today:.2f} s = {indexed / today:.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hw2", default=ROOT, help="folder of the hw2.py to run in part 1")
    parser.add_argument("--level", type=int, help="the indexed PNG's zlib level (default: hw2's)")
    parser.add_argument("--palettes-only", action="store_true", help="part 2 only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        if not args.palettes_only:
            round_trips(args.hw2, folder)
        palettes(folder, args.level)


if __name__ == "__main__":
    main()
