"""``jaxcombine bench`` as a subprocess: it writes valid JSON and a markdown table (no timing checks)."""

import importlib.util
import json

import pytest
import recipe_files
from cli_run import jaxcombine

from jaxcombine.tools import bench

SMOKE = ["bench", "--sizes", "32", "--inits", "1", "--steps", "2", "--repeats", "1"]
SHALLOW = str(recipe_files.SHALLOW)  # the table, not the network, is tested


def run_bench(tmp_path, *extra):
    proc = jaxcombine(*SMOKE, *extra, "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "bench.json").read_text())
    table = (tmp_path / "bench.md").read_text()
    return result, table


@pytest.mark.slow
def test_bench_writes_json_and_markdown(vgg19, tmp_path):
    result, table = run_bench(
        tmp_path, "--loop", "scan", "--conv", "xla,winograd", "--recipe", SHALLOW
    )
    assert [(r["loop"], r["conv"]) for r in result["rows"]] == [
        ("scan", "xla"),
        ("scan", "winograd"),
    ]
    for row in result["rows"]:
        assert row["size"] == 32 and row["inits"] == 1
        assert row["ms_per_step"] > 0 and row["compile_s"] > 0 and row["peak_mb"] > 0
    assert set(result["device_gflops"]) == {"matmul", "conv3x3"}
    assert table.count("\n| 32×32 | 1 |") == 2


@pytest.mark.skipif(
    not (importlib.util.find_spec("torch") and importlib.util.find_spec("pastiche")),
    reason="pastiche comparison needs the [bench] extra (torch, pastiche)",
)
def test_bench_compares_pastiche(vgg19, tmp_path):
    result, table = run_bench(tmp_path, "--loop", "step", "--compare-pastiche")
    ours, theirs = result["rows"]
    assert theirs["loop"] == "pastiche" and ours["vs_pastiche"] > 0
    assert "pastiche" in table


def test_conv_flops_counts_forward_and_input_gradient():
    # block1_conv1 only, 4×4 image: 16 positions × 9 × 3 × 64 MACs, ×2 FLOPs, ×2 for the backward.
    assert bench.conv_flops(["block1_conv1"], 4, 4) == 4 * 16 * 9 * 3 * 64
    # A pool halves the grid for the next block.
    assert bench.conv_flops(["block2_conv1"], 4, 4) == 4 * (
        16 * 9 * (3 * 64 + 64 * 64) + 4 * 9 * 64 * 128
    )


@pytest.mark.parametrize(
    "sizes, fragment",
    [((32, 1), "too small for layer"), ((32, 99999), "needs about"), ((0,), "size must be")],
)
def test_bad_sizes_are_refused_before_the_throughput_probe(tmp_path, monkeypatch, sizes, fragment):
    """Every case is checked before the probe, which takes seconds: the probe never runs."""
    from jaxcombine.errors import JaxcombineError

    probed = []
    monkeypatch.setattr(bench, "device_gflops", lambda: probed.append(1) or {"matmul": 1.0})
    with pytest.raises(JaxcombineError, match=fragment) as err:
        bench.run(bench.BenchConfig(sizes=sizes, recipe=SHALLOW), tmp_path)
    assert probed == [] and "\n" not in str(err.value)
    good = bench.BenchConfig(sizes=(32,), recipe=SHALLOW, loops=("step",), steps=1, repeats=1)
    monkeypatch.setattr(bench, "measure_size", lambda preps, bc: [])  # the probe is heard
    bench.run(good, tmp_path)
    assert probed == [1]


def test_markdown_says_when_the_probe_is_no_ceiling():
    """A row faster than the throughput probe (seen on an H200: 221-305 %) gets a note under
    the table; a table whose rows all lie below the probe has none."""

    def table(fraction):
        row = dict(width=512, height=512, inits=1, loop="scan", conv="xla", compile_s=1.0)
        row |= dict(ms_per_step=2.6, ms_per_step_per_init=2.6, steps_per_s=385.0, peak_mb=9.0)
        row |= dict(gflops_achieved=fraction * 100.0, fraction_of_peak=fraction)
        env = dict(cpu_model="cpu", cpu_count=16, backend="gpu", devices=["H200"], jax="0.11.2")
        return bench.markdown(
            dict(
                environment=env,
                created="2026-12-04",
                command="bench",
                rows=[row],
                device_gflops={"matmul": 100.0},
            )
        )

    assert bench.PROBE_NO_CEILING in table(2.21)
    assert "| 221% |" in table(2.21)
    assert bench.PROBE_NO_CEILING not in table(0.75)
