"""HTML report and ranked-list pictures: content, escaping, and rendering in Chromium."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vireid
from vireid.cli import main
from vireid.data.types import EvalSplit, Modality, ReIDData, Sample
from vireid.retrieval.report import (
    BORDER,
    LABEL,
    RIGHT,
    TILE,
    WRONG,
    cmc_svg,
    ranked_grid,
    ranked_lists,
    write_report,
)
from vireid.runner import evaluate_checkpoint

pytest_plugins = ["_trained_model"]  # fixtures: trained

CHROMIUM = Path("/usr/bin/chromium")


def _sample(pid, cam, path="x.jpg"):
    return Sample(path, pid, cam, Modality.VISIBLE)


def test_ranked_lists_follow_the_protocol_by_hand():
    """SYSU-MM01: a camera-3 query ignores gallery camera 2 (hand-made distances)."""
    gallery = (_sample(5, 2), _sample(7, 1), _sample(5, 1), _sample(9, 4))
    query = (Sample("q.jpg", 5, 3, Modality.INFRARED), Sample("r.jpg", 9, 6, Modality.INFRARED))
    split = EvalSplit("sysu", "all-search/trial0", query, gallery)
    d = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4]])
    first, second = ranked_lists(d, split, [0, 1], topk=2)
    assert [s.camera for s in first.gallery] == [1, 1]  # the camera-2 item is removed
    assert first.correct == [False, True] and first.first_correct == 2 and first.kept == 3
    assert second.first_correct == 4 and second.kept == 4  # camera 6: nothing removed
    assert second.correct == [False, False]  # ids 5 and 7 for a query of id 9
    assert [s.pid for s in second.gallery] == [5, 7]


def test_cmc_svg_places_points_by_hand():
    svg = cmc_svg({"a<b": [0.5, 1.0]}, width=200, height=100)
    # plot box: x 48..184, y 16..60 -> rank 1 at x=48, 50 % at y=38; rank 2 at x=184, y=16
    assert 'points="48.0,38.0 184.0,16.0"' in svg
    assert "a&lt;b" in svg and "a<b" not in svg


def test_ranked_grid_colours_borders(tmp_path):
    img = tmp_path / "p.png"
    Image.new("RGB", (32, 64), (128, 128, 128)).save(img)
    g = [_sample(1, 1, str(img)), _sample(2, 1, str(img))]
    split = EvalSplit("regdb", "t", (Sample(str(img), 1, 2, Modality.INFRARED),), tuple(g))
    rows = ranked_lists(torch.tensor([[0.2, 0.1]]), split, [0], topk=2)
    assert rows[0].correct == [False, True]
    grid = np.asarray(ranked_grid(rows, topk=2))
    tile_h = TILE[0] + 2 * BORDER
    assert grid.shape[0] == tile_h + 2 * LABEL + 6
    cell = TILE[1] + 2 * BORDER + 4
    first_x, second_x = cell + 12, cell + 12 + cell
    assert tuple(grid[1, first_x + 1]) == WRONG and tuple(grid[1, second_x + 1]) == RIGHT


def test_report_metrics_match_evaluation_and_embed_everything(trained, tmp_path):
    _, run, ckpt = trained
    model = vireid.load_model(run)
    page = write_report(model, _data(model), tmp_path / "rep", num_queries=3, topk=4)
    text = page.read_text()
    expected = evaluate_checkpoint(ckpt)["all-search ir->vis"]["mean"]
    for key in ("R1", "mAP", "mINP"):
        assert f"{100 * expected[key]:.2f}" in text
    assert json.loads((page.parent / "metrics.json").read_text())["all-search ir->vis"]["mean"] \
        == pytest.approx(expected)
    assert text.count('class="row"') == 3 and text.count("data:image/jpeg;base64,") == 3 * 5
    assert "<svg" in text and "<polyline" in text
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", text)  # self-contained
    grid = Image.open(page.parent / "ranked_all_search_ir_vis.png")
    assert grid.height == 3 * (TILE[0] + 2 * BORDER + 2 * LABEL + 6)


def _data(model):
    from vireid.runner import load_data

    return load_data(model.config)


def test_hostile_file_names_are_escaped(trained, tmp_path):
    root, run, _ = trained
    model = vireid.load_model(run)
    source = sorted((root / "cam1").rglob("*.jpg"))[:2]
    evil = tmp_path / "<b>x"
    evil.mkdir()
    names = ["<script>alert(1)<script>.jpg", '"><img src=x onerror=alert(2)>.jpg']  # no "/": not in file names
    for src, name in zip(source, names):
        shutil.copy(src, evil / name)
    gallery = tuple(Sample(str(evil / n), 1, 1, Modality.VISIBLE) for n in names)
    query = (Sample(str(evil / names[0]), 1, 3, Modality.INFRARED),)
    data = ReIDData("<i>evil</i> & co", str(evil), [], [EvalSplit("regdb", "a<b>", query, gallery,
                                                              direction="<dir>")])
    page = write_report(model, data, tmp_path / "rep", num_queries=1, topk=2,
                        title="<script>t</script>").read_text()
    for raw in ("<script>", "<img src=x", "<b>x", "<i>evil", "a<b>", "<dir>"):
        assert raw not in page
    assert "&lt;script&gt;alert(1)&lt;script&gt;.jpg" in page
    assert "&quot;&gt;&lt;img src=x onerror=alert(2)&gt;.jpg" in page
    assert "&lt;i&gt;evil&lt;/i&gt; &amp; co" in page


@pytest.mark.skipif(not CHROMIUM.exists(),
                    reason="headless Chromium not installed (/usr/bin/chromium; Debian: "
                    "apt-get install chromium)")
def test_report_renders_in_headless_chromium(trained, tmp_path, capsys):
    _, run, _ = trained
    out = tmp_path / "report"
    assert main(["report", "--ckpt", str(run), "--out", str(out), "--queries", "2",
                 "--topk", "5", "--device", "cpu"]) == 0
    page = Path(capsys.readouterr().out.strip())
    assert page == out / "report.html"
    shot = tmp_path / "shot.png"
    subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--no-first-run",
         "--hide-scrollbars", "--window-size=1200,1400", f"--screenshot={shot}",
         page.resolve().as_uri()],
        check=True, capture_output=True, timeout=120,
    )
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3).astype(int)
    assert len(np.unique(pixels, axis=0)) > 500  # text, curve and photos, not a blank page

    def count(colour):
        return int((np.abs(pixels - np.array(colour)).max(1) <= 12).sum())

    assert count(RIGHT) + count(WRONG) > 2 * 5 * 128  # coloured borders of the ranked lists
    assert count((37, 99, 235)) > 128  # query borders and the CMC curve
