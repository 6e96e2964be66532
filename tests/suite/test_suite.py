"""eval-suite: a tiny suite (2 pairs, 2 shallow recipes, 2 and 1 content weights) writes its
table, fronts, contact sheets and page, and a rerun skips what is done; fronts and
dominance on hand-made points; content weights scale only content terms."""

import csv
import json

import numpy as np
import pytest
import recipe_files
from cli_run import jaxcombine
from PIL import Image

from jaxcombine.errors import JaxcombineError
from jaxcombine.io import images
from jaxcombine.options import recipe
from jaxcombine.suite import fronts, report
from jaxcombine.suite.runner import load_pairs, run_suite, weighted_recipe

SHALLOW = recipe_files.SHALLOW
SIDE = 64


def test_front_and_dominance_on_hand_made_points():
    pts = np.asarray([[1.0, 5.0], [2.0, 3.0], [3.0, 4.0], [4.0, 1.0], [2.0, 3.0]])
    # (3, 4) is beaten by (2, 3); the repeated (2, 3) beats neither copy of itself
    assert sorted(fronts.front(pts).tolist()) == [0, 1, 3, 4]
    a = np.asarray([[1.0, 2.0], [2.0, 1.0]])
    assert fronts.dominates(a, np.asarray([[1.5, 2.5], [3.0, 1.0]]))
    assert not fronts.dominates(a, a)  # equal fronts: nothing strictly better
    assert not fronts.dominates(a, np.asarray([[0.5, 9.0]]))  # a point a does not cover
    rows = [
        {"pair": p, "recipe": r, "judge_content": x, "judge_style_swd": y}
        for p in ("p1", "p2")
        for r, pts in (("good", a), ("bad", a + 1))
        for x, y in pts
    ]
    assert fronts.dominance_counts(rows, ["good", "bad"]) == {
        "good": {"bad": 2},
        "bad": {"good": 0},
    }


def test_shortfalls_name_the_points_left_undominated_on_each_distance():
    # (content weight, LPIPS, sliced W, Gram, W2) of two recipes on one pair
    new = [(0.1, 0.50, 0.05, 0.30, 0.20), (1.0, 0.40, 0.08, 0.40, 0.30)]
    old = [
        (10.0, 0.39, 0.09, 0.60, 0.35),  # nearer the photo than any of new's: left everywhere
        (0.3, 0.60, 0.06, 0.35, 0.25),  # beaten by new's 0.1 on every distance
        (3.0, 0.45, 0.07, 0.50, 0.28),  # beaten by new's 1 on Gram only
        (30.0, 0.40, 0.08, 0.40, 0.30),  # equal to new's 1: weakly dominated, not left
    ]
    rows = [
        {"pair": "p1", "recipe": recipe, "content_weight": w, "judge_content": x,
         "judge_style_swd": swd, "judge_style_gram": gram, "judge_style_w2": w2}
        for recipe, points in (("new", new), ("old", old))
        for w, x, swd, gram, w2 in points
    ]  # fmt: skip
    rows.append({**rows[0], "pair": "only-new"})  # old has no output there: left out
    got = fronts.shortfalls(rows, ["new", "old"])
    assert got["new"]["old"] == {"p1": {"swd": [3.0, 10.0], "gram": [10.0], "w2": [3.0, 10.0]}}
    assert got["old"]["new"] == {"p1": {"swd": [0.1], "gram": [0.1], "w2": [0.1]}}
    # what eval-suite prints: every distance's weights per pair left, so that Gram's
    # differing verdict shows; a pair where nothing is left is not named
    got["new"]["old"]["p2"] = {"swd": [], "gram": [], "w2": []}
    assert report.shortfall_lines(got) == [
        "new leaves old's outputs at content weights undominated: "
        "p1 (swd 3, 10 / gram 10 / w2 3, 10)",
        "old leaves new's outputs at content weights undominated: p1 (swd 0.1 / gram 0.1 / w2 0.1)",
    ]
    # the suite's verdict on the front's distance agrees: neither dominates on p1
    pts = {
        r: np.asarray([(x, swd) for _, x, swd, *_ in p]) for r, p in (("new", new), ("old", old))
    }
    assert not fronts.dominates(pts["new"], pts["old"]) and not fronts.dominates(
        pts["old"], pts["new"]
    )


def _polyline(points, x):
    """y of the polyline through ``points`` (sorted by x) at x, segment by segment."""
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:]):
        if x0 <= x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    raise AssertionError(f"{x} outside the polyline")


def test_style_gap_is_the_mean_log_ratio_of_the_fronts_where_both_reach():
    a = np.asarray([[0.20, 0.30], [0.30, 0.22], [0.45, 0.15]])
    b = np.asarray([[0.25, 0.40], [0.40, 0.12], [0.60, 0.10]])  # crosses a
    lo, hi = 0.25, 0.45  # the content distances both fronts span
    xs = np.linspace(lo, hi, 64)
    want = np.exp(np.mean([np.log(_polyline(a, x) / _polyline(b, x)) for x in xs])) - 1
    assert fronts.style_gap(a, b) == pytest.approx(want, rel=1e-12)
    assert fronts.style_gap(a, b) < 0 < fronts.style_gap(b, a)  # a lies lower over most
    # a front 20 % further from the style everywhere: +20 %, and back -1/6
    far = a * [1.0, 1.2]
    assert fronts.style_gap(far, a) == pytest.approx(0.2)
    assert fronts.style_gap(a, far) == pytest.approx(1 / 1.2 - 1)
    assert fronts.style_gap(a, a + [1.0, 0.0]) is None  # no content distance in common
    assert fronts.style_gap(a, a[:1]) is None  # a single point spans no range
    rows = [
        {"pair": p, "recipe": r, "judge_content": x, "judge_style_swd": y}
        for p, shift in (("p1", 0.0), ("p2", 1.0))
        for r, pts in (("a", a), ("far", far + [shift, 0.0]))
        for x, y in pts
    ]
    gaps = fronts.style_gaps(rows, ["a", "far"])
    assert gaps["far"]["a"] == {"pairs": {"p1": pytest.approx(0.2, abs=1e-4)}, "median": 0.2}


def test_content_weight_scales_only_content_terms_and_pairs_are_checked(tmp_path):
    """The preset's own weights (gatys's content weight is not 1: 0.03 now), content ×3."""
    base, r = recipe.load("gatys"), weighted_recipe("gatys", 3.0)
    assert {t.source for t in base.terms} == {"content", "style"}
    assert [(t.source, t.weight) for t in r.terms] == [
        (t.source, pytest.approx(3.0 * t.weight) if t.source == "content" else t.weight)
        for t in base.terms
    ]
    bad = tmp_path / "pairs.toml"
    bad.write_text('[[pairs]]\ncontent = "missing.png"\nstyle = "x.png"\n')
    with pytest.raises(JaxcombineError, match="missing.png"):
        load_pairs(bad)


@pytest.mark.parametrize(
    "given, message",
    [
        ("nosuch=1,3", "weights given for 'nosuch', which is not among the recipes (gatys)"),
        ("gatys", "expected RECIPE=N,N,..., got 'gatys'"),
    ],
)
def test_bad_recipe_weights_are_one_line_errors_before_any_work(tmp_path, given, message):
    out = tmp_path / "suite"
    r = jaxcombine("eval-suite", "--recipes", "gatys", "--recipe-weights", given, "--out", out)
    assert r.returncode != 0
    assert message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (out / "runs").exists()  # nothing ran


@pytest.mark.parametrize("weights", [[1.0, float("nan")], [-1.0], []])
def test_recipe_weights_are_checked_like_content_weights(tmp_path, weights):
    with pytest.raises(
        JaxcombineError,
        match=r"content weight must be a finite number >= 0, got (nan|-1\.0)$"
        r"|^give gatys at least one content weight$",
    ):
        run_suite(tmp_path / "suite", recipes=["gatys"], recipe_weights={"gatys": weights})
    assert not (tmp_path / "suite" / "runs").exists()


def test_weights_for_one_recipe_by_its_name_and_its_file_are_refused(tmp_path, recipe_file):
    """A recipe file is keyed by its path or its name: both given is a one-line error, not
    the last one silently kept."""
    path = recipe_file(recipe_files.shallow(), "mine")
    with pytest.raises(
        JaxcombineError, match=r"^weights given twice for mine \(as '.*mine.toml'\)$"
    ):
        run_suite(tmp_path / "suite", recipes=[path], recipe_weights={"mine": [1.0], path: [3.0]})
    assert not (tmp_path / "suite" / "runs").exists()


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    """Two pairs of small square pictures (one output shape: the batch runs them together)."""
    d = tmp_path_factory.mktemp("pairs")
    for src, name, box in (
        (images.CONTENT, "a.png", None),
        (images.CONTENT, "b.png", (0, 0, 256, 256)),
        (images.STYLE, "s.png", None),
    ):
        img = Image.open(src).convert("RGB")
        img = img.crop(box) if box else img
        Image.fromarray(images.to_uint8(images.fit(np.asarray(img, np.float32), SIDE, SIDE))).save(
            d / name
        )
    recipe_files.write(d / "w2.toml", recipe_files.shallow_w2())
    path = d / "pairs.toml"
    path.write_text(
        '[[pairs]]\nname = "whole"\ncontent = "a.png"\nstyle = "s.png"\n'
        '[[pairs]]\nname = "corner"\ncontent = "b.png"\nstyle = "s.png"\n'
    )
    return path


def suite(pairs_file, out):
    return jaxcombine(
        "eval-suite", "--pairs", pairs_file,
        "--recipes", f"{SHALLOW},{pairs_file.parent / 'w2.toml'}", "--content-weights", "0.5,2",
        "--recipe-weights", "w2=2",
        "--size", SIDE, "--steps", "2", "--out", out, "--quiet",
        timeout=900,
    )  # fmt: skip


@pytest.mark.slow
def test_tiny_suite_writes_table_fronts_sheets_page_and_resumes(pairs_file, tmp_path):
    out = tmp_path / "suite"
    first = suite(pairs_file, out)
    assert first.returncode == 0, first.stderr
    assert "jobs run 6, skipped 0, failed 0" in first.stdout
    with open(out / "suite.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    # w2 has its own weights (--recipe-weights), shallow the shared ones
    assert {(r["pair"], r["recipe"], float(r["content_weight"])) for r in rows} == {
        (p, r, w)
        for p in ("whole", "corner")
        for r, ws in (("shallow", (0.5, 2.0)), ("w2", (2.0,)))
        for w in ws
    }
    assert {r["judge"] for r in rows} == {"alexnet"}  # the runs optimised vgg19
    assert all(float(r["judge_content"]) > 0 and float(r["hf_color"]) > 0 for r in rows)
    for pair in ("whole", "corner"):
        for kind in ("front", "sheet"):
            assert (out / f"{kind}-{pair}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "suite.html").read_text()
    assert page.count("data:image/png;base64,") == 4
    rec = json.loads((out / "suite.json").read_text())
    assert rec["config"]["judge"] == "alexnet" and rec["config"]["judge_is_run_network"] is False
    assert rec["config"]["recipe_weights"] == {"shallow": [0.5, 2.0], "w2": [2.0]}
    assert set(rec["dominance"]) == {"shallow", "w2"}
    assert set(rec["style_gaps"]["shallow"]) == {"w2"}
    assert "Style gaps at equal content distance" in page
    assert "Where fronts fall short" in page
    for a, b in (("shallow", "w2"), ("w2", "shallow")):
        assert set(rec["shortfalls"][a][b]) == {"whole", "corner"}
        for left in rec["shortfalls"][a][b].values():
            assert set(left) == {"swd", "gram", "w2"}
            # every weight named is one the other recipe ran at
            assert set(sum(left.values(), [])) <= set(rec["config"]["recipe_weights"][b])
    # one shape and two recipe structures: the 6 jobs ran as 2 programs (4 and 2), so jobs
    # that differ only in content weight (a traced number) shared one
    runs = [json.loads(p.read_text()) for p in (out / "runs").glob("*.json")]
    assert sorted(r["group_size"] for r in runs if "group_size" in r) == [2] * 2 + [4] * 4
    scores = sorted((out / "scores").iterdir())
    assert len(scores) == 6
    stamps = [p.stat().st_mtime_ns for p in scores]

    again = suite(pairs_file, out)
    assert again.returncode == 0, again.stderr
    assert "jobs run 0, skipped 6, failed 0" in again.stdout
    assert [p.stat().st_mtime_ns for p in sorted((out / "scores").iterdir())] == stamps

    # a score written before a column existed is judged again; the others are kept
    old = json.loads(scores[0].read_text())
    del old["row"]["judge_style_arrangement"]
    scores[0].write_text(json.dumps(old))
    third = suite(pairs_file, out)
    assert third.returncode == 0, third.stderr
    assert "jobs run 0, skipped 6, failed 0" in third.stdout
    assert "judge_style_arrangement" in json.loads(scores[0].read_text())["row"]
    assert [p.stat().st_mtime_ns for p in scores[1:]] == stamps[1:]
    with open(out / "suite.csv") as f:
        assert all(np.isfinite(float(r["judge_style_arrangement"])) for r in csv.DictReader(f))

    # moved elsewhere, the suite names its jobs as before: nothing runs or is judged again
    stamps = [p.stat().st_mtime_ns for p in sorted((out / "scores").iterdir())]
    moved = tmp_path / "elsewhere" / "suite"
    moved.parent.mkdir()
    out.rename(moved)
    fourth = suite(pairs_file, moved)
    assert fourth.returncode == 0, fourth.stderr
    assert "jobs run 0, skipped 6, failed 0" in fourth.stdout
    assert [p.stat().st_mtime_ns for p in sorted((moved / "scores").iterdir())] == stamps
