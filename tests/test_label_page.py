"""``textlora label``'s page: the real server on a free loopback port, called over HTTP by two
"tabs" at once, killed half-way through a write, and driven with the keyboard in headless Chromium."""

import contextlib
import os
import signal
import subprocess
import sys
import urllib.error
from concurrent.futures import ThreadPoolExecutor

import pandas as pd

from .conftest import free_port
from .test_serve import _browser, _call, await_health

CLASSES = ["sports", "business", "science"]


def _call_token(url, body=None, token=None):
    import json
    import urllib.request

    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


@contextlib.contextmanager
def labelling(data, labels, *flags, env=None):
    """``textlora label --data DATA --labels LABELS`` on a free loopback port; yields (base URL, process)."""
    port = free_port()
    argv = [sys.executable, "-m", "textlora", "label", "--data", str(data), "--labels", str(labels), "--port", str(port), "--goal", "8", *flags]
    if "--model" not in flags:
        argv += ["--classes", *CLASSES]
    full_env = {k: v for k, v in os.environ.items() if k not in ("TEXTLORA_FAULT", "TEXTLORA_API_KEY")} | (env or {})
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=full_env)
    base = f"http://127.0.0.1:{port}"
    try:
        await_health(base, proc)
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)


def _rows(path):
    return pd.read_csv(path, keep_default_na=False, dtype=str)


def test_two_tabs_answering_at_once_lose_nothing_and_write_nothing_twice(trained, tmp_path):
    labels = tmp_path / "labels.csv"
    with labelling(trained / "unlabelled.csv", labels) as (base, _):
        ids = [str(i) for i in pd.read_csv(trained / "unlabelled.csv")["id"][:6]]
        jobs = [(i, CLASSES[k % 3]) for k, i in enumerate(ids)] * 2  # every text answered by both tabs

        def post(job):
            return job[0], _call(base + "/v1/answer", {"id": job[0], "label": job[1]})[0]

        with ThreadPoolExecutor(8) as ex:
            results = list(ex.map(post, jobs))
        for i in ids:
            assert sorted(s for j, s in results if j == i) == [200, 409]  # one answer written, the other refused
        rows = _rows(labels)
        assert sorted(rows["id"]) == sorted(ids) and set(rows["label"]) <= set(CLASSES)
        # a label that is not a class: 422 naming the classes, nothing written
        status, body = _call(base + "/v1/answer", {"id": str(pd.read_csv(trained / "unlabelled.csv")["id"][7]), "label": "cooking"})
        assert status == 422 and "sports, business, science" in body["detail"] and len(_rows(labels)) == 6
        status, body = _call(base + "/v1/next")
        assert status == 200 and body["id"] not in ids and {k: body["progress"][k] for k in ("labelled", "skipped", "goal")} == {"labelled": 6, "skipped": 0, "goal": 8}


def test_killed_half_way_through_a_write_the_labels_file_is_whole_and_a_restart_goes_on(trained, tmp_path):
    labels = tmp_path / "labels.csv"
    with labelling(trained / "unlabelled.csv", labels, env={"TEXTLORA_FAULT": "label_write:3"}) as (base, proc):
        asked = []
        for k in range(3):
            status, nxt = _call(base + "/v1/next")
            asked.append(nxt["id"])
            try:
                _call(base + "/v1/answer", {"id": nxt["id"], "label": CLASSES[k]})
            except (urllib.error.URLError, ConnectionError):
                pass  # the third write kills the server
        assert proc.wait(timeout=30) == -signal.SIGKILL
    rows = _rows(labels)
    assert list(rows.columns) == ["id", "text", "label"] and rows["id"].tolist() == asked[:2] and rows["label"].tolist() == CLASSES[:2]
    with labelling(trained / "unlabelled.csv", labels) as (base, _):
        status, nxt = _call(base + "/v1/next")
        assert nxt["id"] not in asked[:2] and nxt["progress"]["labelled"] == 2


def test_the_page_with_the_keyboard_survives_a_restart_and_asks_for_a_token(trained, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    labels = tmp_path / "labels.csv"
    with _browser(tmp_path) as driver:
        with labelling(trained / "unlabelled.csv", labels) as (base, _):
            driver.get(base + "/")
            wait = WebDriverWait(driver, 30)
            body = driver.find_element(By.TAG_NAME, "body")
            seen = []
            for key in "12312":  # five texts labelled with the keyboard, each then replaced by a new one
                wait.until(lambda d: d.find_element(By.ID, "text").get_attribute("data-id") not in ("", *seen))
                seen.append(driver.find_element(By.ID, "text").get_attribute("data-id"))
                body.send_keys(key)
            wait.until(lambda d: "5 of 8 labelled" in d.find_element(By.ID, "progress").text)
            body.send_keys("u")  # undo the last: it is asked again
            wait.until(lambda d: "4 of 8 labelled" in d.find_element(By.ID, "progress").text)
            assert driver.find_element(By.ID, "text").get_attribute("data-id") == seen[-1]
            assert len(driver.find_elements(By.CSS_SELECTOR, "#classes button")) == 3
        rows = _rows(labels)  # the server is gone: the four answers are in the file
        assert rows["id"].tolist() == seen[:4] and rows["label"].tolist() == ["sports", "business", "science", "sports"]
        with labelling(trained / "unlabelled.csv", labels) as (base, _):
            driver.get(base + "/")
            wait = WebDriverWait(driver, 30)
            wait.until(lambda d: "4 of 8 labelled" in d.find_element(By.ID, "progress").text)
            assert driver.find_element(By.ID, "text").get_attribute("data-id") not in seen[:4]
            driver.find_element(By.ID, "skip").click()
            wait.until(lambda d: "(1 skipped)" in d.find_element(By.ID, "progress").text)
        assert _rows(labels)["label"].tolist()[-1] == ""  # a skip: an empty label
        # with a token the page asks for it, as serve's does
        with labelling(trained / "unlabelled.csv", labels, env={"TEXTLORA_API_KEY": "s3cret"}) as (base, _):
            assert _call(base + "/v1/next")[0] == 401 and _call_token(base + "/v1/next", token="s3cret")[0] == 200
            driver.execute_script("sessionStorage.clear()")
            driver.get(base + "/")
            wait = WebDriverWait(driver, 30)
            wait.until(lambda d: d.find_element(By.ID, "auth").is_displayed())
            assert "needs an API token" in driver.find_element(By.ID, "progress").text
            driver.find_element(By.ID, "token").send_keys("s3cret")
            driver.find_element(By.ID, "login").click()
            wait.until(lambda d: d.find_element(By.ID, "text").get_attribute("data-id") not in ("", *seen[:4]))
