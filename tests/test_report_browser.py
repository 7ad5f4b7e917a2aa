"""The report in a real browser: headless Chromium through selenium and the distribution's
chromedriver (Debian: ``apt-get install chromium chromium-driver``; ``pip install selenium``).
The page loads without console errors, its plots render, the Figure 1 browser pages and filters
by task id, and trajectory text injects nothing.  Skipped when Chromium, chromedriver or selenium
is missing.

``EEF_REPORT_RUNS`` (run or ``eef compare`` output directories, separated by ``os.pathsep``)
also checks the report of those real runs: ``EEF_REPORT_RUNS=runs/compare python -m pytest
tests/test_report_browser.py`` (docs/RESULTS.md)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report_fakes import write_fake_run  # noqa: E402

from eef.report.html import ReportConfig, build_report  # noqa: E402

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))
                 if p), None)
DRIVER = shutil.which("chromedriver")
try:
    import selenium  # noqa: F401
    HAVE_SELENIUM = True
except ImportError:
    HAVE_SELENIUM = False

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not (CHROMIUM and DRIVER and HAVE_SELENIUM),
    reason="browser test needs Chromium and chromedriver (apt-get install chromium "
           "chromium-driver) and selenium (pip install selenium)")]


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """A report of 3 hand-built seeds (more than one page of Figure 1 entries)."""
    root = tmp_path_factory.mktemp("browser")
    train = [f"webshop/B0FAKE{i:04d}/{i % 4}" for i in range(30)]
    test = [f"webshop/B0TEST{i:04d}/0" for i in range(12)]
    for s in range(3):
        write_fake_run(root / "cmp" / f"seed{s}", train, test, seed=10 + s, iterations=2, S=1)
    out = build_report([root / "cmp"], root / "report.html", ReportConfig(progress=False))
    return out


@pytest.fixture(scope="module")
def real_page(tmp_path_factory):
    """The report of real runs named by ``EEF_REPORT_RUNS`` (skipped when unset)."""
    runs = [Path(p) for p in os.environ.get("EEF_REPORT_RUNS", "").split(os.pathsep) if p]
    if not runs:
        pytest.skip("EEF_REPORT_RUNS not set: no real run to check")
    return build_report(runs, tmp_path_factory.mktemp("real") / "report.html",
                        ReportConfig(progress=False))


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-dev-shm-usage", "--window-size=1280,1024",
              f"--user-data-dir={tmp_path_factory.mktemp('chrome-profile')}"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)
    d.set_page_load_timeout(60)
    yield d
    d.quit()


def _entries(driver) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('.fig1-entry'))"
        ".map(function (e) { return e.getAttribute('data-task'); });")


def _loads_and_renders(driver, page, min_plots: int) -> None:
    driver.get(page.resolve().as_uri())
    severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert not severe, severe
    imgs = driver.execute_script(
        "return Array.from(document.querySelectorAll('img.plot'))"
        ".map(function (i) { return [i.complete, i.naturalWidth, i.naturalHeight]; });")
    assert len(imgs) >= min_plots
    assert all(c and w > 0 and h > 0 for c, w, h in imgs), imgs


def test_page_loads_without_errors_and_plots_render(driver, page):
    _loads_and_renders(driver, page, 5)


def test_real_run_report_loads_and_renders(driver, real_page):
    from selenium.webdriver.common.by import By
    _loads_and_renders(driver, real_page, 1)
    total = driver.execute_script(
        "return JSON.parse(document.getElementById('fig1-data').textContent).length;")
    assert driver.find_element(By.ID, "fig1-count").text.startswith(f"{total} of {total}")
    if total:  # the search finds the first entry's task
        task = _entries(driver)[0]
        driver.find_element(By.ID, "fig1-search").send_keys(task)
        assert _entries(driver) and all(task.lower() in t.lower() for t in _entries(driver))


def test_figure1_pages_and_filters_by_task_id(driver, page):
    from selenium.webdriver.common.by import By
    driver.get(page.resolve().as_uri())
    data = driver.execute_script("return JSON.parse(document.getElementById('fig1-data').textContent);")
    total = len(data)
    assert total > 50, "the fixture must span more than one page"
    first = _entries(driver)
    assert len(first) == 50
    assert driver.find_element(By.ID, "fig1-count").text.startswith(f"{total} of {total}")
    driver.find_element(By.ID, "fig1-next").click()
    second = _entries(driver)
    assert len(second) == min(50, total - 50)
    assert second == [e["task"] for e in data[50:100]]
    assert driver.find_element(By.ID, "fig1-page").text.startswith("page 2 of ")

    query = data[7]["task"]  # a full task id, e.g. webshop/B0FAKE0007/3
    box = driver.find_element(By.ID, "fig1-search")
    box.send_keys(query)
    got = _entries(driver)
    want = [e["task"] for e in data if query.lower() in e["task"].lower()]
    assert got == want[:50] and got and all(t == query for t in got)
    assert driver.find_element(By.ID, "fig1-page").text.startswith("page 1 of 1")
    box.clear()
    box.send_keys("B0FAKE000")  # a prefix: ids 0000-0009
    got = _entries(driver)
    want = [e["task"] for e in data if "b0fake000" in e["task"].lower()]
    assert got == want[:50] and len(want) > len({query})
    box.clear()
    box.send_keys("no such task")
    assert _entries(driver) == []
    assert driver.find_element(By.ID, "fig1-count").text.startswith(f"0 of {total}")
    severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert not severe, severe


def test_state_chip_opens_its_continuations(driver, page):
    from selenium.webdriver.common.by import By
    driver.get(page.resolve().as_uri())
    chip = driver.find_elements(By.CSS_SELECTOR, ".fig1-entry a.st")[1]
    target = chip.get_attribute("href").split("#", 1)[1]
    assert not driver.execute_script(f"return document.getElementById('{target}').open;")
    chip.click()
    assert driver.execute_script(f"return document.getElementById('{target}').open;")


def test_trajectory_text_injects_nothing(driver, page):
    from selenium.webdriver.common.by import By
    driver.get(page.resolve().as_uri())
    # open every continuation of the first page so all its text is in the DOM
    driver.execute_script("document.querySelectorAll('details').forEach(function (d) { d.open = true; });")
    assert driver.execute_script("return window.__pwned === undefined;")
    assert driver.execute_script("return document.querySelectorAll('script').length;") == 2
    assert driver.execute_script("return document.querySelectorAll('img:not(.plot)').length;") == 0
    text = driver.find_element(By.ID, "fig1-list").text
    assert "<script>window.__pwned='script'</script>" in text  # shown as text
