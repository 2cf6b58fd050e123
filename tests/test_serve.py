"""The real server on a free loopback port, called over HTTP; its web page driven in headless Chromium;
and the HTML report."""

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from textlora.cli import main

from .conftest import free_port, make_texts


def _call(url, body=None, raw=None, timeout=30):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data is not None else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


@pytest.fixture(scope="module")
def run(trained):
    return trained / "run"


@contextlib.contextmanager
def serving(run, *flags: str):
    """``textlora serve --model RUN`` on a free loopback port, as a subprocess; yields its base URL once /healthz answers."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "textlora", "serve", "--model", str(run), "--port", str(port), *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        await_health(base, proc)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def await_health(base: str, proc) -> None:
    """Wait (90 s at most) until the server at ``base`` answers /healthz; fail with its output if it exits."""
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if _call(base + "/healthz", timeout=2)[0] == 200:
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.3)
        if proc.poll() is not None:
            pytest.fail(f"server exited: {proc.stdout.read()}")
    pytest.fail(f"{base} did not answer /healthz within 90 s")


@pytest.fixture(scope="module")
def server(run):
    with serving(run, "--max-batch", "8") as base:
        yield base


def test_classify_matches_predict(server, run):
    from textlora.prediction import load

    texts = make_texts(2, seed=11)["text"].tolist()  # 6 texts, under --max-batch 8
    status, body = _call(server + "/v1/classify", {"texts": texts})
    assert status == 200
    probs = load(run).predict_proba(texts)
    assert [p["label"] for p in body["predictions"]] == probs.argmax(1).tolist()
    got = np.array([[p["probabilities"][n] for n in ("sports", "business", "science")] for p in body["predictions"]])
    assert np.allclose(got, probs, atol=1e-4)


def test_model_health_and_openapi(server):
    status, info = _call(server + "/v1/model")
    assert status == 200 and info["label_names"] == ["sports", "business", "science"] and info["trainable_params"]["total"] > 0
    assert info["examples"]  # from the run's dev split, for the page's buttons
    assert _call(server + "/healthz") == (200, {"status": "ok"})
    status, spec = _call(server + "/openapi.json")
    assert status == 200 and "/v1/classify" in spec["paths"]


def test_error_codes(server):
    url = server + "/v1/classify"
    assert _call(url, raw=b"{not json")[0] == 422
    assert _call(url, {"texts": "one string"})[0] == 422
    assert _call(url, {"texts": []})[0] == 422
    assert _call(url, {"text": ["x"]})[0] == 422
    status, body = _call(url, {"texts": ["goal"] * 9})
    assert status == 413 and "limit is 8" in body["detail"]
    assert _call(url, {"texts": ["goal", "  "]})[0] == 422
    status, body = _call(url, {"texts": ["goal match " * 20_000]})  # over the limit: truncated, answered
    assert status == 200 and len(body["predictions"]) == 1


def test_concurrent_requests_are_all_answered_correctly(server, run):
    from textlora.prediction import load

    pool_texts = make_texts(20, seed=12)["text"].tolist()
    expected = dict(zip(pool_texts, load(run).predict_proba(pool_texts).argmax(1).tolist()))
    requests = [pool_texts[i % 60 : i % 60 + 1 + i % 3] for i in range(200)]

    def one(texts):
        status, body = _call(server + "/v1/classify", {"texts": texts})
        return status, [p["label"] for p in body["predictions"]], [expected[t] for t in texts]

    start = time.time()
    with ThreadPoolExecutor(16) as ex:
        results = list(ex.map(one, requests, timeout=120))
    assert time.time() - start < 120
    assert all(s == 200 and got == want for s, got, want in results)


def _chromium():
    for b, d in (("/usr/bin/chromium", "/usr/bin/chromedriver"),):
        if os.path.exists(b) and os.path.exists(d):
            return b, d
    return None


@contextlib.contextmanager
def _browser(tmp_path):
    """Headless Debian Chromium through selenium; fails (or skips, with TEXTLORA_SKIP_BROWSER=1) without it."""
    found = _chromium()
    if found is None:
        if os.environ.get("TEXTLORA_SKIP_BROWSER") == "1":
            pytest.skip("BROWSER TEST NOT RUN: TEXTLORA_SKIP_BROWSER=1 and no /usr/bin/chromium + /usr/bin/chromedriver")
        pytest.fail("BROWSER TEST CANNOT RUN: install Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = found[0]
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1000,900",
    ):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(found[1]), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def test_web_page_in_headless_chromium(server, run, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from textlora.prediction import load

    with _browser(tmp_path) as driver:
        driver.get(server + "/")
        wait = WebDriverWait(driver, 30)
        wait.until(lambda d: "classes:" in d.find_element(By.ID, "meta").text)
        text = "coach team goal season match"
        driver.find_element(By.ID, "text").send_keys(text)
        driver.find_element(By.ID, "go").click()
        wait.until(ec.visibility_of_element_located((By.ID, "label")))
        wait.until(lambda d: d.find_element(By.ID, "label").text != "")
        clf = load(run)
        expected = clf.label_names[int(clf.predict_proba([text])[0].argmax())]
        assert driver.find_element(By.ID, "label").text == expected
        assert len(driver.find_elements(By.CSS_SELECTOR, "#bars .row")) == 3
        driver.find_elements(By.CSS_SELECTOR, "button.example")[0].click()  # an example fills the box and classifies
        wait.until(lambda d: d.find_element(By.ID, "text").get_attribute("value") != text)
        shot = tmp_path / "page.png"
        driver.save_screenshot(str(shot))
        assert shot.read_bytes()[:4] == b"\x89PNG"
        if os.environ.get("TEXTLORA_SCREENSHOT_DIR"):
            shutil.copy(shot, os.environ["TEXTLORA_SCREENSHOT_DIR"])


def test_report_has_sections_and_embedded_images(run, tmp_path):
    out = tmp_path / "report.html"
    assert main(["report", "--model", str(run), "--output", str(out)]) == 0
    html = out.read_text()
    for section in ("id='config'", "id='curves'", "id='confusion'", "id='per-class'", "id='mistakes'", "id='data'", "id='timings'"):
        assert section in html
    assert html.count("src='data:image/png;base64,") >= 2
    assert "http://" not in html and "https://" not in html  # opens offline: nothing to fetch
    assert main(["report", "--model", str(run), "--output", str(out)]) == 2  # no overwrite without --overwrite


def _call_as(url, token=None, body=None):
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def test_api_key_guards_v1_and_the_body_size_is_capped(run, monkeypatch):
    import http.client

    monkeypatch.setenv("TEXTLORA_API_KEY", "s3cret-token")  # from the environment: out of the shell history
    with serving(run, "--max-batch", "4", "--max-chars", "100", "--max-body-bytes", "4096") as base:
        assert _call_as(base + "/healthz") == (200, {"status": "ok"})  # health stays open
        with urllib.request.urlopen(base + "/", timeout=30) as r:  # the page loads (and asks for the token)
            assert r.status == 200 and "token" in r.read().decode()
        for path, body in (("/v1/model", None), ("/v1/classify", {"texts": ["goal"]})):
            status, err = _call_as(base + path, body=body)
            assert status == 401 and "token" in err["detail"]
            assert _call_as(base + path, "wrong", body)[0] == 401
            assert _call_as(base + path, "s3cret-token-longer", body)[0] == 401
            assert _call_as(base + path, "s3cret-token", body)[0] == 200
        # a body over --max-body-bytes is refused before it is parsed: by its Content-Length ...
        status, err = _call_as(base + "/v1/classify", "s3cret-token", {"texts": ["x" * 5000]})
        assert status == 413 and "4096" in err["detail"]
        # ... and, sent in chunks without one, as soon as it passes the cap
        host, port = base.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        chunks = iter([b'{"texts": ["', b"y" * 3000, b"y" * 3000, b'"]}'])
        conn.request("POST", "/v1/classify", body=chunks, encode_chunked=True,
                     headers={"Authorization": "Bearer s3cret-token", "Content-Type": "application/json"})
        r = conn.getresponse()
        assert r.status == 413, r.read()
        conn.close()
        # under the cap, chunked, the same request is answered
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        conn.request("POST", "/v1/classify", body=iter([b'{"texts": ["goal ', b'match"]}']), encode_chunked=True,
                     headers={"Authorization": "Bearer s3cret-token", "Content-Type": "application/json"})
        r = conn.getresponse()
        assert r.status == 200 and len(json.loads(r.read())["predictions"]) == 1
        conn.close()
    # without a key the API stays open (loopback default)
    monkeypatch.delenv("TEXTLORA_API_KEY")
    with serving(run) as base:
        assert _call_as(base + "/v1/model")[0] == 200


def test_web_page_asks_for_the_api_token(run, tmp_path, monkeypatch):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    monkeypatch.setenv("TEXTLORA_API_KEY", "page-token")
    with serving(run) as base, _browser(tmp_path) as driver:
        driver.get(base + "/")
        wait = WebDriverWait(driver, 30)
        wait.until(lambda d: d.find_element(By.ID, "auth").is_displayed())
        assert "needs an API token" in driver.find_element(By.ID, "meta").text
        driver.find_element(By.ID, "token").send_keys("wrong")
        driver.find_element(By.ID, "login").click()
        wait.until(lambda d: "refused" in d.find_element(By.ID, "meta").text)
        driver.find_element(By.ID, "token").clear()
        driver.find_element(By.ID, "token").send_keys("page-token")
        driver.find_element(By.ID, "login").click()
        wait.until(lambda d: "classes:" in d.find_element(By.ID, "meta").text)
        assert not driver.find_element(By.ID, "auth").is_displayed()
        driver.find_element(By.ID, "text").send_keys("coach team goal season match")
        driver.find_element(By.ID, "go").click()
        wait.until(lambda d: d.find_element(By.ID, "label").text != "")
