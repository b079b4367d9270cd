"""The search service for real: ``python -m deploy serve`` in its own process (uvicorn on a
free port), its page driven in headless Chromium (Debian's ``/usr/bin/chromium``, through
Playwright, which downloads no browser), many clients adding at once, and the token off
loopback. Slow: each test starts the service (and a browser)."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from test_deploy import REPO, run_cli, search_json
from test_serve import TOKEN, noise_png

from deploy.index import HammingIndex

pytestmark = pytest.mark.slow

sys.path.insert(0, str(REPO / "scripts"))
from check_report_chromium import CHROMIUM, blank_reasons  # noqa: E402


def start(index: Path, encoder: Path, *extra) -> tuple[subprocess.Popen, dict]:
    """Starts the service; returns the process and the JSON it prints once it is ready."""
    argv = [sys.executable, "-m", "deploy", "serve", "--index", index, "--encoder", encoder,
            "--port", "0", "--json", *extra]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "YNET_SERVE_TOKEN"}
    process = subprocess.Popen([str(a) for a in argv], cwd=REPO, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    line = process.stdout.readline()  # '' if it died before it was ready
    if not line:
        process.wait(timeout=30)
        pytest.fail(f"the service did not start: {process.stderr.read()}")
    # Its log is read as it comes (a full pipe would stall the service) and kept for
    # the failure message.
    process.log = []
    threading.Thread(target=lambda: process.log.extend(process.stderr), daemon=True).start()
    return process, json.loads(line)


def stop(process: subprocess.Popen, how=signal.SIGINT) -> None:
    process.send_signal(how)
    assert process.wait(timeout=30) == 0, "".join(process.log)


@pytest.fixture
def served(art, tmp_path, capsys):
    encoder, index = art["dir"] / "encoder.onnx", tmp_path / "index"
    rc, _, err = run_cli(capsys, "index", "build", "--encoder", encoder, "--data", art["data"],
                         "--out", index)  # fmt: skip
    assert rc == 0, err
    test_ids = [i for i, s in zip(art["ids"], art["split"], strict=True) if s == "test"]
    queries = [art["data"] / "images" / f"{i}.png" for i in test_ids]
    return {"index": index, "encoder": encoder, "queries": queries}


def test_the_page_shows_the_hits_of_an_uploaded_and_a_dropped_image(served, capsys, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not installed (make browser)")
    wants = [search_json(capsys, served["index"], served["encoder"], q, k=10)
             for q in served["queries"]]  # fmt: skip
    process, ready = start(served["index"], served["encoder"])
    try:
        assert ready == {"url": f"http://127.0.0.1:{ready['port']}/", "host": "127.0.0.1",
                         "port": ready["port"], "index": str(served["index"]), "items": 14,
                         "token_required": False}  # fmt: skip
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1200, "height": 1600})
            page.goto(ready["url"])
            # Functions, not expressions: Playwright evaluates an expression with eval,
            # which the page's Content-Security-Policy forbids.
            page.wait_for_function(
                "() => document.getElementById('info').textContent.includes('14')"
            )
            # 1. Chosen with the file input (what a click on the drop zone opens).
            page.set_input_files("#file", str(served["queries"][0]))
            assert shown_hits(page, served["queries"][0].name) == rows(wants[0])
            titles = page.frame_locator("#report").locator("h2").all_inner_texts()
            assert titles == ["Query"] + [f"#{h['rank']} · distance {h['distance']}"
                                          for h in wants[0]]  # fmt: skip
            page.screenshot(path=tmp_path / "page.png", full_page=False)
            assert blank_reasons(tmp_path / "page.png") == []  # the images are drawn
            # 2. Dropped onto the drop zone, as a file dragged from the desktop.
            data = base64.b64encode(served["queries"][1].read_bytes()).decode()
            page.evaluate(DROP, [data, served["queries"][1].name])
            assert shown_hits(page, served["queries"][1].name) == rows(wants[1])
            browser.close()
    finally:
        stop(process)


DROP = """([data, name]) => {
  const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], name, {type: "image/png"}));
  const zone = document.getElementById("drop");
  for (const type of ["dragenter", "dragover", "drop"]) {
    zone.dispatchEvent(new DragEvent(type, {dataTransfer: transfer, bubbles: true, cancelable: true}));
  }
}"""


def shown_hits(page, query_name: str) -> list[list[str]]:
    page.wait_for_function(
        "n => document.getElementById('status').textContent.endsWith('nearest to ' + n)",
        arg=query_name,
    )
    return page.eval_on_selector_all(
        "tr.hit", "rows => rows.map(r => [...r.cells].map(c => c.textContent))"
    )


def rows(hits: list[dict]) -> list[list[str]]:
    return [[str(h["rank"]), h["id"], str(h["distance"]), f"{64 - h['distance']} / 64",
             h["label"], "-"] for h in hits]  # fmt: skip


def test_concurrent_clients_lose_no_add(served, tmp_path):
    """8 clients add 5 images each while others search and the command line adds two more:
    every id ends up in the index on disk and in the service's memory."""
    extra = [tmp_path / "cli-a.png", tmp_path / "cli-b.png"]
    for seed, path in enumerate(extra, start=100):
        path.write_bytes(noise_png(seed))
    process, ready = start(served["index"], served["encoder"])
    url = ready["url"]

    # A fresh connection for every request: what is tested is the service's writes under
    # concurrency, not how a client pool and the server agree on reusing idle connections.
    fresh = httpx.Limits(max_keepalive_connections=0)

    def add_five(client_no: int) -> list[int]:
        with httpx.Client(base_url=url, timeout=60, limits=fresh) as client:
            return [
                client.post(
                    "/api/items",
                    files={"file": ("n.png", noise_png(10 * client_no + i), "image/png")},
                    data={"id": f"c{client_no}-{i}"},
                ).status_code
                for i in range(5)
            ]

    def search_five(_) -> list[int]:
        with httpx.Client(base_url=url, timeout=60, limits=fresh) as client:
            files = {"file": ("q.png", served["queries"][0].read_bytes(), "image/png")}
            return [client.post("/api/search", files=files).status_code for _ in range(5)]

    try:
        cli_add = subprocess.Popen(
            [sys.executable, "-m", "deploy", "index", "add", "--index", str(served["index"]),
             "--encoder", str(served["encoder"]), *map(str, extra)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        with ThreadPoolExecutor(12) as pool:
            adding = pool.map(add_five, range(8))  # submitted at once: all run together
            searching = pool.map(search_five, range(4))
            adds, searches = list(adding), list(searching)
        assert cli_add.wait(timeout=120) == 0, cli_add.stderr.read()
        assert adds == [[201] * 5] * 8 and searches == [[200] * 5] * 4
        want = {f"c{c}-{i}" for c in range(8) for i in range(5)} | set(map(str, extra))
        on_disk = HammingIndex.load(served["index"]).ids
        assert len(on_disk) == 14 + 42 and want <= set(on_disk)
        health = httpx.get(url + "api/health").json()
        assert health == {"status": "ok", "items": 56}
    finally:
        stop(process)


def test_off_loopback_every_api_request_needs_the_token(served):
    process, ready = start(served["index"], served["encoder"], "--host", "0.0.0.0",
                           "--token", TOKEN)  # fmt: skip
    try:
        assert (ready["host"], ready["token_required"]) == ("0.0.0.0", True)
        url = f"http://127.0.0.1:{ready['port']}/"
        assert httpx.get(url + "api/health").status_code == 401
        wrong = {"Authorization": "Bearer not-the-token-at-all"}
        assert httpx.get(url + "api/index", headers=wrong).status_code == 401
        right = {"Authorization": f"Bearer {TOKEN}"}
        assert httpx.get(url + "api/health", headers=right).json() == {"status": "ok", "items": 14}
        assert httpx.get(url).status_code == 200  # the page holds no data; it asks for the token
    finally:
        stop(process, signal.SIGTERM)  # as a service manager stops it: exit 0 too


def test_the_service_needs_no_tensorflow(served):
    script = """
import sys
from pathlib import Path
from starlette.testclient import TestClient
import deploy.cli_serve
from deploy.search_service import SearchService
from deploy.serve_app import create_app
index, encoder, query = sys.argv[1:]
api = TestClient(create_app(SearchService(index, encoder)))
files = {"file": ("q.png", Path(query).read_bytes())}
assert api.post("/api/search", files=files, data={"report": "1"}).status_code == 200
print(sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "keras_ynet")))
"""
    argv = [served["index"], served["encoder"], served["queries"][0]]
    done = subprocess.run([sys.executable, "-c", script, *map(str, argv)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert (done.returncode, done.stdout) == (0, "[]\n"), done.stderr
