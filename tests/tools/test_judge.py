"""The judge: LPIPS 0 on an image against itself and positive on two photos, the record
naming the judge, a default judge the run did not optimise, and the high-frequency colour
energy checked against numpy."""

import json
import re
from functools import partial

import numpy as np
import pytest
from cli_run import assert_one_line_error, jaxcombine
from PIL import Image
from scipy import ndimage

from jaxcombine.io import images
from jaxcombine.networks import lpips
from jaxcombine.options import layers
from jaxcombine.tools import judge as judge_lib
from jaxcombine.tools import metrics

SIDE = 64  # AlexNet's conv5 needs 31 px


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """The bundled photo and painting as small PNGs, with no run record beside them."""
    d = tmp_path_factory.mktemp("photos")
    out = []
    for src, name in ((images.CONTENT, "content.png"), (images.STYLE, "other.png")):
        Image.fromarray(images.to_uint8(images.fit(images.read(src), SIDE, SIDE))).save(d / name)
        out.append(d / name)
    return out


# --------------------------------------------------------------------------- colour speckle


def test_hf_color_energy_is_the_chroma_laplacian_zero_on_flat_and_large_on_colour_noise():
    rng = np.random.default_rng(0)
    noise = rng.uniform(0, 255, (96, 96, 3))
    # numpy reference written apart from the code: BT.601 chroma, the 4-neighbour
    # Laplacian as a convolution over the interior, mean square, summed over Cb and Cr
    cb = 128 - 0.168736 * noise[..., 0] - 0.331264 * noise[..., 1] + 0.5 * noise[..., 2]
    cr = 128 + 0.5 * noise[..., 0] - 0.418688 * noise[..., 1] - 0.081312 * noise[..., 2]
    kernel = np.asarray([[0, 1, 0], [1, -4, 1], [0, 1, 0]], np.float64)
    want = sum(float(np.mean(ndimage.convolve(c, kernel)[1:-1, 1:-1] ** 2)) for c in (cb, cr))
    got = judge_lib.hf_color_energy(noise)
    assert got == pytest.approx(want, rel=1e-12)
    # iid noise: E[lap²] = (16 + 4) σ² per channel; σ² = var(U(0,255)) Σ coefficient²
    var = 255.0**2 / 12 * (0.168736**2 + 0.331264**2 + 0.25 + 0.25 + 0.418688**2 + 0.081312**2)
    assert got == pytest.approx(20 * var, rel=0.05)  # ~8.9e4; 9216 samples: ~1 % spread
    flat = np.broadcast_to(np.asarray([200.0, 30.0, 90.0]), (32, 32, 3))
    assert judge_lib.hf_color_energy(flat) == pytest.approx(0.0, abs=1e-20)
    grey_noise = np.repeat(noise[..., :1], 3, axis=-1)  # luma detail only: no colour speckle
    assert judge_lib.hf_color_energy(grey_noise) < 1e-18 * got


# --------------------------------------------------------------------------- eval --judge


def alexnet_lpips_rounding() -> tuple[float, float]:
    """(γ, Σw) for LPIPS on AlexNet. Two images in one batched forward (or in two) get
    each activation as a float32 computation of the same numbers, off by at most the
    accumulated rounding of its dot products: relative γ = ε Σ_l (kernel taps × input
    channels), first order, so unit vectors differ by at most 2γ. Σw: the heads' weights
    summed, which LPIPS multiplies the squared differences by."""
    eps = float(np.finfo(np.float32).eps)
    gamma = eps * sum(kh * kw * cin for kh, kw, cin, _ in layers.conv_shapes("alexnet").values())
    return gamma, sum(float(np.sum(w)) for w in lpips.load("alex")[1].values())


@pytest.mark.slow
def test_eval_judge_alexnet_lpips_zero_on_itself_positive_on_another_photo(photos, tmp_path):
    content, other = photos
    out = tmp_path / "scores.csv"
    proc = jaxcombine(
        "eval", content, other, "--content", content, "--style", other,
        "--judge", "alexnet", "--out", out,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "judge: alexnet (user)" in proc.stdout
    rec = json.loads(out.with_suffix(".json").read_text())
    judge = rec["config"]["judge"]
    assert judge["judge"] == "alexnet" and judge["judge_is_run_network"] is False
    assert judge["judge_content"].startswith("LPIPS (alex")
    assert set(rec["weights"]["judge"]) == {"alexnet", "lpips-alex"}
    rows = {r["image"]: r for r in rec["rows"]}
    same, different = rows[str(content)]["judge_content"], rows[str(other)]["judge_content"]
    # The image and the content go through one batched forward: their unit vectors
    # differ by at most 2γ (alexnet_lpips_rounding), and LPIPS sums the heads' weights
    # times that squared: the bound is Σ_l Σ_c w_lc (2γ)².
    gamma, sum_w = alexnet_lpips_rounding()
    bound = sum_w * (2 * gamma) ** 2
    assert 0.0 <= same <= bound
    assert different > 100 * bound and different > 0.05
    csv_header = out.read_text().splitlines()[0].split(",")
    assert {"judge_content", "judge_style_arrangement", "judge_style_swd", "hf_color"} <= set(
        csv_header
    )


def test_arrangement_is_the_distance_to_the_shifted_style_less_that_to_the_style(photos, tmp_path):
    """judge_style_arrangement against the same LPIPS taken another way: each distance
    again as a content distance (LPIPS is symmetric), with the painting shifted on disk."""
    content, painting = photos
    shifted = tmp_path / "shifted.png"
    pixels = np.asarray(Image.open(painting).convert("RGB"))
    Image.fromarray(np.roll(pixels, SIDE // 2, axis=1)).save(shifted)

    def lpips_to(image, reference):
        j = judge_lib.judge_images([image], content=reference, style=painting, judge="alexnet")
        return j.rows[0]["judge_content"]

    j = judge_lib.judge_images(
        [painting, content], content=content, style=painting, judge="alexnet"
    )
    of_painting, of_photo = (row["judge_style_arrangement"] for row in j.rows)
    painting_to_shifted = lpips_to(shifted, painting)
    photo_to_shifted, photo_to_painting = lpips_to(shifted, content), j.rows[0]["judge_content"]
    # Each side of a comparison sits elsewhere in a batch: each unit vector is off by at
    # most 2γ (alexnet_lpips_rounding), which moves a distance d by at most 4γ·sqrt(d·Σw).
    gamma, sum_w = alexnet_lpips_rounding()

    def off(*distances):
        return sum(4 * gamma * np.sqrt(d * sum_w) + sum_w * (2 * gamma) ** 2 for d in distances)

    # the painting keeps its own arrangement: its distance to its shift, less ~0 to itself
    assert painting_to_shifted > 0.05
    assert abs(of_painting - painting_to_shifted) <= off(painting_to_shifted)
    expected = photo_to_shifted - photo_to_painting
    assert abs(of_photo - expected) <= off(photo_to_shifted, photo_to_painting)
    assert of_painting > of_photo + 0.05  # the photo does not keep the painting's arrangement
    assert j.settings["judge_style_arrangement"].startswith("LPIPS (alex")


@pytest.mark.slow  # the VGG19 judge's branch; the quick tier measures AlexNet's, above
def test_judge_without_lpips_heads_measures_arrangement_by_its_content_layer(photos):
    """VGG19 has no LPIPS heads: block4_conv2's relative error, as its content column."""
    content, painting = photos
    j = judge_lib.judge_images([painting, content], content=content, style=painting, judge="vgg19")
    of_painting, of_photo = (row["judge_style_arrangement"] for row in j.rows)
    assert of_painting > 0.1 and of_painting > of_photo + 0.1
    assert j.settings["judge_style_arrangement"].startswith("relative squared error of block4")


# --------------------------------------------------------------------------- default judge


def test_default_judge_is_a_network_the_run_did_not_optimise(photos, tmp_path):
    content, other = photos
    made = tmp_path / "made.png"
    made.write_bytes(other.read_bytes())
    record = tmp_path / "made.json"
    record.write_text(json.dumps({"config": {"model": "alexnet"}}))
    assert judge_lib.run_model(made) == ("alexnet", str(record))
    assert judge_lib.run_model(content)[0] == "vgg19"  # no record: the default model
    assert judge_lib.default_judge(["vgg19"]) == "alexnet"
    assert judge_lib.default_judge(["alexnet"]) == "vgg16-tv"

    j = judge_lib.judge_images([content], content=content, style=other)
    assert j.settings["judge"] == "alexnet"  # the run (assumed vgg19) did not optimise it
    assert j.settings["judge_is_run_network"] is False
    assert j.settings["judge_chosen_by"].startswith("default")
    assert "warning" not in j.settings

    same = judge_lib.judge_images([made], content=content, style=other, judge="alexnet")
    assert same.settings["judge_is_run_network"] is True
    assert "network a run optimised" in same.settings["warning"]


# --------------------------------------------------------------------------- memory

# Peaks of `jaxcombine eval IMAGE --judge NAME` (max RSS, /usr/bin/time) on a 2-core AMD
# EPYC, 24 GiB, CPU (judge.py says how they were measured). AlexNet's stay within eval's
# own estimate; the VGG judges' reach or pass it.
MEASURED_PEAKS = {
    ("alexnet", 192, 256): 2.374e9,
    ("alexnet", 384, 512): 3.074e9,
    ("alexnet", 768, 1024): 6.164e9,
    ("alexnet", 1200, 1600): 12.118e9,
    ("vgg16-tv", 384, 512): 3.686e9,
    ("vgg16-tv", 768, 1024): 7.144e9,
    ("vgg16-tv", 1200, 1600): 13.538e9,
    ("vgg16-tv", 192, 256): 2.749e9,
    ("vgg19", 384, 512): 3.492e9,
    ("vgg19", 768, 1024): 6.283e9,
    ("vgg19", 1200, 1600): 11.960e9,
}


def test_the_judge_estimate_errs_high_against_every_measured_peak():
    for (name, h, w), peak in MEASURED_PEAKS.items():
        other = partial(judge_lib.estimate_bytes, name)
        assert peak < metrics.command_bytes(h, w, other=other) < 1.3 * peak, (name, h, w)


def test_eval_refuses_what_only_the_judge_would_not_fit_in_one_line(tmp_path):
    """A limit between eval's own estimate and the judge's: refused before any work, the
    size it names fits with the judge."""
    big = tmp_path / "big.png"
    Image.new("RGB", (1600, 1200), (90, 120, 150)).save(big)
    read = sum(h * w for h, w in map(images.header_size, (images.CONTENT, images.STYLE, big)))
    other = partial(judge_lib.estimate_bytes, "vgg16-tv")
    alone = metrics.command_bytes(1200, 1600, read_pixels=read)
    judged = metrics.command_bytes(1200, 1600, read_pixels=read, other=other)
    assert judged > alone
    limit = (alone + judged) / 2e9
    out = tmp_path / "t.csv"
    proc = jaxcombine(
        "eval", big, "--judge", "vgg16-tv", "--max-memory", f"{limit:.4f}", "--out", out
    )
    assert proc.returncode == 2
    assert_one_line_error(proc, "(scoring 1600x1200) but")
    size = int(re.search(r"use --size (\d+) ", proc.stderr).group(1))
    w, h = images.target_size(1600, 1200, size=size)
    assert 0 < size < 1600
    assert metrics.command_bytes(h, w, read_pixels=read, other=other) <= limit * 1e9
    assert not out.exists() and not out.with_suffix(".json").exists()
