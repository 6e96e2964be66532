"""Feed-forward training: the step, N vmapped networks, resume, refusals, exact tiles.

Tiny on purpose, and one shape across the file so that the tests share their compiled
programs (the step of 1 and of 2 networks, the initialisation, the sample grid's forward):
32-px crops, batches of 2, width-8 networks without residual blocks, the shallow recipe
(to block2_conv1), a few steps.
"""

import dataclasses
import json
import os
import shutil
import signal
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cli_run import jaxcombine, start
from PIL import Image

from jaxcombine.errors import JaxcombineError
from jaxcombine.io import images, records
from jaxcombine.options.config import TrainConfig
from jaxcombine.train import network, objective, photos, stylize, trainer

SHALLOW = str(Path(__file__).resolve().parents[1] / "shallow.toml")


def _photo_folder(folder: Path) -> Path:
    """Real photo files: four corners of the bundled astronaut (PNG and JPEG) and
    matplotlib's grace_hopper.jpg."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = images.to_uint8(images.read(images.CONTENT, size=160))
    h, w = rgb.shape[:2]
    for i, (y, x) in enumerate([(0, 0), (0, w // 2), (h // 2, 0), (h // 2, w // 2)]):
        Image.fromarray(rgb[y : y + h // 2, x : x + w // 2]).save(
            folder / f"part{i}.{'png' if i % 2 else 'jpg'}"
        )
    shutil.copy(photos.default_paths()[0], folder / "hopper.jpg")
    return folder


def _config(folder: Path, **changes) -> TrainConfig:
    base = dict(
        photos=str(folder),
        recipe=SHALLOW,
        crop=32,
        batch=2,
        width=8,
        res_blocks=0,
        conv="xla",  # compiles in half the time of Winograd at these sizes
        style_size=64,
        steps=6,
        lr=2e-3,
        checkpoint_every=100,
        sample_every=0,
        seed=3,
    )
    return TrainConfig(**{**base, **changes})


@pytest.fixture(scope="module", autouse=True)
def shared_compile_cache():
    """This file's programs go to the session's compile cache (tests/conftest.py), which the
    CLI subprocesses read: the CLI training below has the file's shape, so it loads the
    step, the initialisation and the sample grid's forward instead of compiling them. Only
    for this module: the other test processes' compiles stay uncached (tests count them)."""
    from jax.experimental.compilation_cache import compilation_cache

    before = (
        jax.config.jax_compilation_cache_dir,
        jax.config.jax_persistent_cache_min_compile_time_secs,
    )
    compilation_cache.reset_cache()
    jax.config.update("jax_compilation_cache_dir", os.environ["JAXCOMBINE_COMPILE_CACHE"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    yield
    compilation_cache.reset_cache()
    jax.config.update("jax_compilation_cache_dir", before[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", before[1])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return _photo_folder(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="module")
def two_styles(folder, vgg19):
    """A training of two networks (the bundled painting and a photo as the styles)."""
    style2 = folder.parent / "style2.png"
    h, w = images.read(images.STYLE, size=64).shape[:2]  # the same shape: one targets program
    images.write(style2, images.fit(images.read(images.CONTENT, size=64)[::-1], h, w))
    return trainer.prepare(_config(folder, style=(str(images.STYLE), str(style2))))


def _run(tr, state, steps, *, start=0, batch_step=None):
    """``steps`` steps of ``tr``; each step's batch is step ``batch_step``'s (fixed) or its own."""
    c = tr.config
    weights = jnp.asarray(trainer.losses.weights(tr.recipe))
    totals = []
    for t in range(start, start + steps):
        b = t if batch_step is None else batch_step
        batch = photos.batch(tr.photos.train, c.seed, b, size=c.batch, crop=c.crop, zoom=c.zoom)
        index = np.zeros((c.batch,), np.int32)
        state, total, _ = objective.step(
            tr.objective,
            state,
            tr.variables,
            tr.targets,
            batch,
            index,
            weights,
            objective.step_key(c.seed, b),
        )
        totals.append(np.asarray(total))
    return state, np.stack(totals)


def _fresh(tr):
    """A fresh state placed as the trainer places it (the same compiled step)."""
    state = objective.init_state(tr.objective.net, tr.config.seed, tr.nets, tr.config.lr)
    return trainer.place(tr, state)[1]


def test_step_lowers_the_loss_on_a_fixed_batch(two_styles):
    _, totals = _run(two_styles, _fresh(two_styles), 6, batch_step=0)
    assert np.all(np.isfinite(totals))
    # both networks, on the batch they are trained on: well below where they started
    assert np.all(totals[-1] < 0.8 * totals[0]), totals


@pytest.mark.slow
def test_vmapped_networks_equal_networks_trained_one_by_one(two_styles):
    """Two networks in one program equal each trained alone (its slice of the state and
    of the style targets), over 3 steps.

    Tolerances: the batched program may sum the same products in another order, so each
    gradient differs by float32 rounding (about 1e-6 of its size), and so does each Adam
    step (at most about lr = 2e-3 per parameter): the losses agree to 1e-5 relative and
    the parameters to 1e-5 (1/200 of lr; measured ~4e-7). One kind of parameter is left
    to the outputs: the shift of a residual block's second normalisation, whose output
    reaches only a convolution and another normalisation, which removes any constant
    per channel. Its true gradient is 0, so both programs step it by ±lr on rounding
    noise (Adam divides a gradient by its own size); it changes no output, so the
    networks' outputs on the held-out photo agree to 0.01 grey levels."""
    tr = two_styles
    together, totals = _run(tr, _fresh(tr), 3)
    side = trainer.SAMPLE_SIDE  # the sample grid's size: its compiled forward is shared
    held = np.stack([images.fit(rgb, side, side) for _, rgb in tr.photos.held_out])
    index = jnp.zeros((len(held),), jnp.int32)
    invariant = {f"norm{4 + 2 * k}" for k in range(tr.config.res_blocks)}
    for n in range(2):
        take = lambda a, n=n: a[n : n + 1]
        alone_tr = dataclasses.replace(tr, targets=jax.tree.map(take, tr.targets))
        fresh = _fresh(tr)
        alone_state = objective.State(
            jax.tree.map(take, fresh.params), jax.tree.map(take, fresh.opt_state), fresh.step
        )
        alone, alone_totals = _run(alone_tr, alone_state, 3)
        np.testing.assert_allclose(alone_totals[:, 0], totals[:, n], rtol=1e-5)
        compared = 0
        for layer, leaves in alone.params.items():
            for name, a in leaves.items():
                if layer in invariant and name == "shift":
                    continue
                assert float(jnp.max(jnp.abs(a[0] - together.params[layer][name][n]))) < 1e-5
                compared += 1
        assert compared >= 10
        mine = jax.tree.map(take, together.params)
        outs = [
            objective.stylize_all(tr.objective.net, p, held, index) for p in (mine, alone.params)
        ]
        assert float(jnp.max(jnp.abs(outs[0] - outs[1]))) < 0.01


def test_a_resume_compares_the_files_bytes_not_their_paths(folder, tmp_path):
    """What a checkpoint records of its inputs (Training.meta's config and inputs, made
    here without a training): the same photos and style at other paths resume; an edited
    photo or style is refused in one line naming it; a checkpoint from before the
    digests (0.1.0: no inputs) is still compared by the paths."""
    style = tmp_path / "style.jpg"
    style.write_bytes(images.STYLE.read_bytes())
    config = _config(folder, style=(str(style),)).resolved()
    meta = records.to_json(
        {"config": config, "inputs": trainer.input_digests(config), "labels": ["style"]}
    )

    moved = _photo_folder(tmp_path / "elsewhere" / "photos")
    (moved.parent / "style.jpg").write_bytes(style.read_bytes())
    there = config.replace(photos=str(moved), style=(str(moved.parent / "style.jpg"),))
    # the same bytes: no error
    trainer.refuse_mismatch(there, meta, tmp_path, trainer.input_digests(there))
    renamed = moved.parent / "s.jpg"
    (moved.parent / "style.jpg").rename(renamed)
    there = there.replace(style=(str(renamed),))
    with pytest.raises(JaxcombineError, match=r"style names \['style'\] there, \['s'\] here"):
        trainer.refuse_mismatch(there, meta, tmp_path, trainer.input_digests(there))

    Image.open(moved / "part0.jpg").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(
        moved / "part0.jpg"
    )
    renamed.write_bytes((folder / "part1.png").read_bytes())
    with pytest.raises(JaxcombineError) as e:
        trainer.refuse_mismatch(there, meta, tmp_path, trainer.input_digests(there))
    assert "\n" not in str(e.value)
    assert f"other files: photos {moved}, style 1 {renamed}" in str(e.value)

    old = {"config": meta["config"]}  # a 0.1.0 checkpoint: its paths are what it has
    trainer.refuse_mismatch(config, old, tmp_path, trainer.input_digests(config))
    with pytest.raises(JaxcombineError, match="photos .* there, .* here"):
        trainer.refuse_mismatch(there, old, tmp_path, trainer.input_digests(there))


@pytest.mark.slow
def test_resume_continues_from_the_same_step_with_the_same_parameters(folder, vgg19, tmp_path):
    config = _config(folder)
    whole = trainer.train(config, tmp_path / "whole", progress=False)
    assert (whole.started_at, whole.steps_done) == (0, 6)
    first = trainer.train(config, tmp_path / "split", progress=False, stop_after=3)
    assert (first.steps_done, first.interrupted) == (3, False)
    second = trainer.train(config, tmp_path / "split", progress=False)
    assert (second.started_at, second.steps_done) == (3, 6)
    a = stylize.load(tmp_path / "whole")
    b = stylize.load(tmp_path / "split")
    assert a.meta["step"] == b.meta["step"] == 6
    # the same programs on the same batches and keys: the same parameters
    assert a.meta["fingerprint"] == b.meta["fingerprint"]
    history = (tmp_path / "split" / "history.csv").read_text().splitlines()
    assert [int(r.split(",")[0]) for r in history[1:]] == [1, 2, 3, 4, 5, 6]
    assert (tmp_path / "split" / "samples" / "step-0000006.png").is_file()

    # the same folders typed otherwise resume (paths compared resolved) ...
    again = config.replace(photos=os.path.relpath(folder) + os.sep)
    assert trainer.train(again, tmp_path / "split", progress=False).steps_done == 6
    # ... and so does a copy of them elsewhere (the files compared by their bytes) ...
    shutil.copytree(folder, tmp_path / "copy")
    moved = config.replace(photos=str(tmp_path / "copy"))
    assert trainer.train(moved, tmp_path / "split", progress=False).steps_done == 6
    # ... and a resume with another configuration is refused in one line, naming it
    with pytest.raises(JaxcombineError) as e:
        trainer.train(config.replace(crop=48, steps=8), tmp_path / "split", progress=False)
    assert "\n" not in str(e.value) and "crop 32 there, 48 here" in str(e.value)


@pytest.mark.slow
def test_tiled_stylize_equals_the_whole_image(tmp_path):
    """Tiles with instance-norm statistics gathered over the whole image, and the
    receptive field as context, give the whole image's result everywhere. Tolerance:
    the statistics are sums over ~10^4 positions in another order (float32 partial sums,
    float64 across tiles), ~1e-6 relative, carried through 5 normalisations to outputs
    in 0-255: well under 0.01; asserted 0.01 (a fiftieth of the PNG's rounding)."""
    net = trainer.net_of(_config(Path(".")))  # the file's network: its init is compiled
    params = objective.init_state(net, 0, 1, 1e-3).params
    # non-trivial normalisation scales and shifts, as training makes them
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda a: a + 0.3 * rng.standard_normal(a.shape, np.float32), params)
    trained = stylize.Trained(net, params, ("s",), {}, tmp_path)
    rgb = images.read(images.CONTENT, size=90)  # 90x90: not a multiple of 4 either
    whole = stylize.apply(trained, rgb[None], 0, 0)[0]
    tiled = stylize.apply_tiled(trained, rgb, 0, 0, tile=32, batch=3)
    halo = 4 * -(-network.receptive_radius(net.res_blocks) // 4)
    assert len(stylize.windows(92, 32, halo)) == 3  # really tiled: 3x3 windows
    assert whole.shape == tiled.shape == rgb.shape
    assert np.abs(whole - tiled).max() < 0.01
    # and without the gathered statistics, tiles would not match (the test can fail)
    assert (
        np.abs(whole[:48, :48] - stylize.apply(trained, rgb[None, :48, :48], 0, 0)[0]).max() > 0.01
    )


@pytest.mark.slow  # each Winograd convolution is checked in the quick tier (test_winograd)
def test_winograd_network_equals_the_direct_one():
    """stylize's default on CPUs: the 3x3 stride-1 convolutions by Winograd, the same
    parameters. Tolerance: float32 Winograd agrees with a direct convolution to ~1e-5 of a
    layer's largest value (test_winograd); through a few normalised layers to 0-255
    outputs that is far under 0.01 grey levels, asserted (a fiftieth of the PNG's rounding)."""
    direct = network.TransformNet(width=8, res_blocks=1)
    rng = np.random.default_rng(0)

    def draw(path, shape):  # random parameters of the network's shapes (init costs seconds)
        noise = rng.standard_normal(shape.shape).astype(np.float32)
        if len(shape.shape) == 4:  # a kernel: unit-variance outputs
            return noise / np.sqrt(np.prod(shape.shape[:3]))
        return 0.3 * noise + (1.0 if jax.tree_util.keystr(path).endswith("['scale']") else 0.0)

    shapes = jax.eval_shape(lambda key: network.init(direct, key), jax.random.key(0))
    params = jax.tree_util.tree_map_with_path(draw, shapes)
    rgb = jnp.asarray(images.fit(images.read(images.CONTENT, size=64), 60, 64))[None]
    forward = jax.jit(network.forward, static_argnums=0)  # eagerly: hundreds of tiny programs
    a = forward(direct, params, rgb)
    b = forward(direct.clone(conv="winograd"), params, rgb)
    assert a.shape == b.shape == (1, 60, 64, 3) and float(jnp.std(a)) > 1.0  # not flat
    assert float(jnp.abs(a - b).max()) < 0.01
    with pytest.raises(JaxcombineError, match="unknown conv 'fft'"):
        network.forward(direct.clone(conv="fft"), params, rgb)


def test_bad_photos_are_skipped_in_one_line_and_an_empty_set_refused(folder, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "notes.png").write_text("not an image")
    (bad / "cut.jpg").write_bytes((folder / "part0.jpg").read_bytes()[:200])
    (bad / "readme.txt").write_text("ignored: not an image suffix")
    lines = []
    with pytest.raises(JaxcombineError) as e:
        photos.load(bad, crop=32, zoom=1.0, warn=lines.append)
    assert "no training photos" in str(e.value) and "\n" not in str(e.value)
    assert len(lines) == 2 and all("\n" not in x and x.startswith("skipping photo") for x in lines)
    shutil.copy(folder / "part1.png", bad / "good.png")
    lines.clear()
    found = photos.load(bad, crop=32, zoom=1.0, warn=lines.append)
    assert found.names == ("good.png",) and len(lines) == 2
    assert [n for n, _ in found.held_out] == ["astronaut"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(JaxcombineError, match="no training photos in .*empty"):
        photos.load(empty, crop=32, zoom=1.0)


def test_batches_depend_on_seed_and_step_only(folder):
    found = photos.load(folder, crop=32, zoom=1.5)
    a = photos.batch(found.train, 1, 7, size=3, crop=32, zoom=1.5)
    b = photos.batch(found.train, 1, 7, size=3, crop=32, zoom=1.5)
    c = photos.batch(found.train, 1, 8, size=3, crop=32, zoom=1.5)
    assert a.shape == (3, 32, 32, 3) and np.array_equal(a, b) and not np.array_equal(a, c)
    feed = photos.Prefetch(lambda t: t * 10, 5, 8)
    got = []
    for step, value in feed:
        got.append((step, value))
        if step == 7:
            break
    feed.close()
    assert got == [(5, 50), (6, 60), (7, 70)]


@pytest.mark.slow
def test_cli_train_killed_resumes_then_stylizes(folder, vgg19, tmp_path):
    """The real console script: a training killed with SIGKILL after a checkpoint resumes
    from it, and the trained network stylizes a photo into an image and its record. (The
    refusals' one line through the CLI: tests/cli; their messages: the tests above.)"""
    net = tmp_path / "net"
    # the file's shape (_config): its programs come from the compile cache
    args = [
        "train", "--photos", folder, "--recipe", SHALLOW, "--crop", "32", "--batch", "2",
        "--width", "8", "--res-blocks", "0", "--style-size", "64", "--lr", "2e-3",
        "--seed", "3", "--checkpoint-every", "2", "--sample-every", "0", "--conv", "xla",
        "--out", net, "-q",
    ]  # fmt: skip
    proc = start(*args, "--steps", "100000")
    deadline = time.monotonic() + 300
    while not (net / "checkpoints" / "2").is_dir() and proc.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    saved = max(int(p.name) for p in (net / "checkpoints").iterdir() if p.name.isdigit())
    assert saved >= 2

    resumed = jaxcombine(*args, "--steps", saved + 2)
    assert resumed.returncode == 0, resumed.stderr
    assert f"step {saved + 2} (from {saved})" in resumed.stdout

    out = tmp_path / "styl"
    done = jaxcombine("stylize", "--net", net, folder / "part1.png", "--out", out, "-q")
    assert done.returncode == 0, done.stderr
    record = json.loads((out / "part1-starry_night.json").read_text())
    assert record["net_step"] == saved + 2 and record["image"] == "part1-starry_night.png"
    assert (
        images.read(out / "part1-starry_night.png").shape == images.read(folder / "part1.png").shape
    )


def test_recipes_a_network_cannot_learn_are_refused_in_one_line():
    from jaxcombine.options import recipe

    objective.check_recipe(recipe.load("gatys"))  # statistics over positions: learnable
    with pytest.raises(JaxcombineError) as e:
        objective.check_recipe(recipe.load("style4-content3"))
    assert "\n" not in str(e.value) and "style:activations" in str(e.value)
    with pytest.raises(JaxcombineError, match="has during = 'scales'; a training has no") as e:
        objective.check_recipe(recipe.load("nnst"))  # its final pass is staged
    assert "\n" not in str(e.value)


def test_output_conv_by_taps_equals_the_convolution():
    """The output layer's matmul-and-shifted-sums form (network.conv_by_taps) computes the
    convolution: against a float64 numpy sum of the same products. Tolerance: any float32
    summation of n = 9·9·32 products is within γ_n · Σ|x·k| of the exact sum (γ_n = n·u / (1 -
    n·u), u = 2^-24; Higham, Accuracy and Stability, §3.1), whatever the order, for both
    forms; the products are exact in float64."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 20, 23, 32)).astype(np.float32)
    k = (0.05 * rng.standard_normal((9, 9, 32, 3))).astype(np.float32)
    windows = np.lib.stride_tricks.sliding_window_view(x.astype(np.float64), (9, 9), (1, 2))
    exact = np.einsum("bhwcij,ijco->bhwo", windows, k.astype(np.float64))
    scale = np.einsum("bhwcij,ijco->bhwo", np.abs(windows), np.abs(k.astype(np.float64)))
    n, u = 9 * 9 * 32, 2.0**-24
    bound = n * u / (1 - n * u) * scale
    taps = np.asarray(network.conv_by_taps(jnp.asarray(x), jnp.asarray(k)), np.float64)
    lax_conv = jax.lax.conv_general_dilated(
        x, k, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    assert taps.shape == exact.shape == (2, 12, 15, 3)
    assert np.all(np.abs(taps - exact) <= bound)
    assert np.all(np.abs(np.asarray(lax_conv, np.float64) - exact) <= bound)
    # the output layer keeps nn.Conv's parameters: checkpoints are unchanged
    net = network.TransformNet(width=4, res_blocks=0)
    params = jax.eval_shape(lambda key: network.init(net, key), jax.random.key(0))
    assert params["Conv_5"]["kernel"].shape == (9, 9, 4, 3)
    assert params["Conv_5"]["bias"].shape == (3,)


def test_resize_conv_equals_the_convolution_of_the_doubled_image():
    """The upsamplings' resize-convolution at the source's resolution (network.resize_conv)
    equals nearest ×2, reflection padding by one and a 3×3 convolution, against a float64
    numpy sum of the doubled image's products; and the network's edge padding of the
    source is the doubled image's reflection. Tolerance: each output sums n = 9·C products
    of which pairs of kernel taps were added first in float32 (one more rounding each), so
    any order is within γ_(n+1) · Σ|x·k| of the exact sum (Higham, §3.1)."""
    rng = np.random.default_rng(1)
    c, o = 6, 5
    x = rng.standard_normal((2, 7, 9, c)).astype(np.float32)
    k = (0.2 * rng.standard_normal((3, 3, c, o))).astype(np.float32)
    doubled = np.pad(
        np.repeat(np.repeat(x, 2, 1), 2, 2), ((0, 0), (1, 1), (1, 1), (0, 0)), "reflect"
    )
    windows = np.lib.stride_tricks.sliding_window_view(doubled.astype(np.float64), (3, 3), (1, 2))
    exact = np.einsum("bhwcij,ijco->bhwo", windows, k.astype(np.float64))
    scale = np.einsum("bhwcij,ijco->bhwo", np.abs(windows), np.abs(k.astype(np.float64)))
    n, u = 9 * c + 1, 2.0**-24
    bound = n * u / (1 - n * u) * scale
    source = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), "edge")
    phased = np.asarray(network.resize_conv(jnp.asarray(source), jnp.asarray(k)), np.float64)
    assert phased.shape == exact.shape == (2, 14, 18, o)
    assert np.all(np.abs(phased - exact) <= bound)
    # it can fail: the phases interleaved the other way round are far off
    swapped = phased.reshape(2, 7, 2, 9, 2, o).swapaxes(2, 4).reshape(phased.shape)
    assert np.abs(swapped - exact).max() > 100 * bound.max()
