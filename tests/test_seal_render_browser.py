"""A seal as people see it: its SVG drawn by headless Chromium as an ``<img>`` (how a portal
shows an uploaded seal: no scripts, nothing fetched), saved as a PNG and looked at pixel by
pixel: not blank, the navy and gold of the design, the ring's ticks where the seal id's bits
put them. With ``MANDATE_SCREENSHOTS=docs/screenshots`` the picture is kept as
``docs/screenshots/seal.png`` (as tests/test_readme_journey.py keeps the others)."""

import base64
import os
from pathlib import Path

import pytest

from evidence.seals.payload import ring_bits
from evidence.seals.svg import CX, CY, HEIGHT, TICK_OUTER, WIDTH
from tests.browser import chromium_tab
from tests.seal_world import issue

pytestmark = [pytest.mark.browser, pytest.mark.django_db]

SCREENSHOTS = os.environ.get("MANDATE_SCREENSHOTS", "")

# Counts the picture's pixels by kind, and reads the ring: for each tick, whether the pixel
# 20 units inside the outer edge (only a long tick, a 1, reaches it) is navy.
MEASURE = """async ([cx, cy, outer]) => {
  const img = document.querySelector('img');
  await img.decode();
  const canvas = document.createElement('canvas');
  canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
  const context = canvas.getContext('2d');
  context.drawImage(img, 0, 0);
  const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
  let navy = 0, gold = 0, paper = 0, transparent = 0;
  for (let i = 0; i < pixels.length; i += 4) {
    const [r, g, b, a] = [pixels[i], pixels[i + 1], pixels[i + 2], pixels[i + 3]];
    if (a < 16) transparent++;
    else if (r < 60 && g < 70 && b > 50 && b < 110) navy++;
    else if (r > 150 && r < 235 && g > 110 && g < 200 && b < 130) gold++;
    else if (r > 240 && g > 235 && b > 220) paper++;
  }
  const ring = [];
  for (let index = 0; index < 128; index++) {
    const angle = index * 2 * Math.PI / 128, radius = outer - 20;
    const x = Math.round(cx + radius * Math.sin(angle)), y = Math.round(cy - radius * Math.cos(angle));
    const [r, g, b] = context.getImageData(x, y, 1, 1).data;
    ring.push(r < 90 && g < 100 && b < 140 ? 1 : 0);
  }
  return {width: canvas.width, height: canvas.height, total: pixels.length / 4, navy, gold, paper, transparent, ring};
}"""


def test_seal_renders_as_the_designed_picture(tmp_path, monkeypatch):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    bundle = issue()
    source = base64.b64encode(bundle.seal_svg.encode()).decode()
    page = (
        '<!doctype html><html><body style="margin:0;background:#ffffff">'
        f'<img alt="seal" width="{WIDTH}" height="{HEIGHT}" src="data:image/svg+xml;base64,{source}">'
        "</body></html>"
    )
    with chromium_tab("http://127.0.0.1") as tab:
        tab.set_viewport_size({"width": WIDTH, "height": HEIGHT})
        tab.set_content(page)
        seen = tab.evaluate(MEASURE, [CX, CY, TICK_OUTER])
        picture = tab.locator("img").screenshot(path=str(tmp_path / "seal.png"))
    assert (seen["width"], seen["height"]) == (WIDTH, HEIGHT)
    assert seen["transparent"] < seen["total"] * 0.02  # the card fills the picture
    assert seen["navy"] > seen["total"] * 0.08  # the emblem's disc, the ticks, the bars, the text
    assert seen["gold"] > seen["total"] * 0.005
    assert seen["paper"] > seen["total"] * 0.3
    assert seen["ring"] == ring_bits(bundle.seal_id)  # the ring reads back as the seal id
    assert picture[:8] == b"\x89PNG\r\n\x1a\n" and len(picture) > 20_000
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        (Path(SCREENSHOTS) / "seal.png").write_bytes(picture)
