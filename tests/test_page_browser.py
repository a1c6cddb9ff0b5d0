"""The run page (index.html) in a real browser: headless Chromium loads it from a local file,
logs no console error, shows every image at a non-zero natural size, has every section, and
leaves a screenshot beside the run. Skipped, with the reason in one line, where Chromium, its
driver or Selenium is missing (``.ci/run`` installs Debian's ``chromium`` and
``chromium-driver`` where it can)."""

from __future__ import annotations

import shutil

import pytest

from probdiff.cli import main


def browser():
    """A headless Chromium through Selenium, or a skip naming what is missing."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    chrome = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chrome or not driver:
        pytest.skip("no chromium and chromedriver on PATH (Debian: chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chrome
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,2400"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


@pytest.mark.parametrize(
    "fit",
    [
        ["gmm", "--data", "mixture2d:n=200", "--steps", "20"],
        ["vae", "--data", "digits:n=120", "--steps", "10", "--hidden", "16", "--iwae-k", "2"],
    ],
    ids=["gmm", "vae"],
)
def test_run_page_in_headless_chromium(tmp_path, capsys, fit):
    out = tmp_path / fit[0]
    assert main(["fit", *fit, "--out", str(out), "--quiet", "--posterior-samples", "5"]) == 0
    assert main(["sample", str(out), "-n", "16"]) == 0
    assert main(["report", str(out)]) == 0
    capsys.readouterr()
    figures = {p.relative_to(out).as_posix() for p in out.rglob("*.png")}
    images, headings, _ = open_page(out / "index.html", tmp_path / f"{fit[0]}-page.png")
    assert {src for src, *_ in images} == figures
    for heading in ("Metrics", "Figures", "Model and guide"):
        assert any(h.startswith(heading) for h in headings), (heading, headings)
    assert any(h.startswith("model: ") for h in headings)


def open_page(page, screenshot):
    """Load ``page`` headless; assert no console error and every image loaded at a non-zero
    natural size; keep a screenshot; return (images, headings, section ids)."""
    driver = browser()
    try:
        driver.get(page.as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => "
            "[i.getAttribute('src'), i.complete, i.naturalWidth, i.naturalHeight]);"
        )
        headings = driver.execute_script(
            "return Array.from(document.querySelectorAll('h2, h3, summary'))"
            ".map(e => e.textContent);"
        )
        sections = driver.execute_script(
            "return Array.from(document.querySelectorAll('section')).map(e => e.id);"
        )
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        driver.execute_script("window.scrollTo(0, 0);")
        assert driver.save_screenshot(str(screenshot))
    finally:
        driver.quit()
    assert not errors, errors
    broken = [src for src, complete, w, h in images if not (complete and w > 0 and h > 0)]
    assert not broken, broken
    assert screenshot.stat().st_size > 10_000
    return images, headings, sections


@pytest.mark.slow
def test_tutorial_page_in_headless_chromium(tmp_path, capsys):
    """The README's first command: every chapter's section, every figure of every step."""
    out = tmp_path / "tutorial"
    assert main(["tutorial", "--out", str(out), "--quick"]) == 0
    capsys.readouterr()
    steps = sorted(p.name for p in out.iterdir() if p.is_dir())
    images, headings, sections = open_page(out / "index.html", out / "screenshot.png")
    assert sorted(sections) == steps
    figures = {p.relative_to(out).as_posix() for s in steps for p in (out / s).glob("*.png")}
    assert {src for src, *_ in images} == figures
    assert sum(h.startswith("model: ") for h in headings) == len(steps)
