"""The search service (``python -m deploy serve``) through Starlette's TestClient: the
same hits as ``deploy search``, the why-it-matched numbers and page, adds and removes
through the writer lock, and every misuse answered with its status and a clear message.

The end-to-end run (a real uvicorn process, a browser, concurrent clients) is in
tests/test_serve_e2e.py.
"""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient
from test_deploy import run_cli, search_json
from test_image_formats import write_dicom

from deploy import cli, codes
from deploy.cli_serve import is_loopback
from deploy.index import HammingIndex
from deploy.search_service import SearchService
from deploy.serve_app import create_app

TOKEN = "s3cret-token-of-the-ward"


@pytest.fixture
def served(art, tmp_path, capsys):
    """An index of the tiny export's train split and a service over it."""
    encoder, index = art["dir"] / "encoder.onnx", tmp_path / "index"
    rc, _, err = run_cli(capsys, "index", "build", "--encoder", encoder, "--data", art["data"],
                         "--out", index)  # fmt: skip
    assert rc == 0, err
    service = SearchService(index, encoder)
    test_ids = [i for i, s in zip(art["ids"], art["split"], strict=True) if s == "test"]
    query = art["data"] / "images" / f"{test_ids[0]}.png"
    return {"service": service, "index": index, "encoder": encoder, "query": query}


def client(served, **kwargs) -> TestClient:
    return TestClient(create_app(served["service"], **kwargs))


def upload(path, name=None):
    return {"file": (name or path.name, path.read_bytes(), "application/octet-stream")}


def noise_png(seed: int) -> bytes:
    """A distinct image per seed (the service keeps images by content)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (64, 64), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_search_gives_the_command_lines_hits_and_why(served, capsys):
    want = search_json(capsys, served["index"], served["encoder"], served["query"], k=5)
    response = client(served).post("/api/search", files=upload(served["query"]),
                                   data={"k": "5", "report": "1"})  # fmt: skip
    assert response.status_code == 200, response.text
    got = response.json()
    assert (got["query"], got["k"], got["bits"]) == (served["query"].name, 5, 64)
    assert got["hash_grid"] == {"rows": 2, "cols": 2, "bits_per_cell": 16, "first_bit": 0}
    fields = ("rank", "id", "distance", "label", "path")
    assert [{f: h[f] for f in fields} for h in got["results"]] == want
    # Why: per hit, bits agreeing and the fraction per grid cell (bit i in cell i // 16).
    index = HammingIndex.load(served["index"])
    query_bits = served["service"].encoder.encode_file(served["query"])
    for hit in got["results"]:
        position = index.ids.index(hit["id"])
        hit_bits = codes.unpack_bits(index.packed_codes([position]), 64)[0]
        same = (hit_bits == query_bits).reshape(2, 2, 16)
        assert hit["agreeing_bits"] == 64 - hit["distance"] == int(same.sum())
        assert hit["cell_agreement"] == same.mean(axis=-1).tolist()
    # The page is the report `deploy search --report` writes.
    page = got["report_html"]
    assert re.findall(r"<dt>id</dt><dd>([^<]*)</dd>", page) == [served["query"].name] + [
        h["id"] for h in want
    ]
    assert all(f"distance {h['distance']}</h2>" in page for h in want)
    assert "2 x 2 grid" in page and page.count("image not shown") == 0
    assert f"<dt>path</dt><dd>{served['query'].name}</dd>" in page and "ynet-serve-" not in page


def test_add_search_remove_go_to_disk_and_to_memory(served):
    api = client(served)
    response = api.post("/api/items", files=upload(served["query"], "scan 7.png"),
                        data={"id": "scan-7", "label": "normal"})  # fmt: skip
    assert response.status_code == 201, response.text
    stored = served["index"].with_name("index.images")
    added = response.json()
    assert (added["id"], added["replaced"], added["items"]) == ("scan-7", False, 15)
    assert added["path"].startswith(str(stored)) and added["path"].endswith(".png")
    on_disk = dict(HammingIndex.load(served["index"]).entries())
    assert on_disk["scan-7"] == {"path": added["path"], "label": "normal",
                                 "filename": "scan_7.png"}  # fmt: skip
    hits = api.post("/api/search", files=upload(served["query"]), data={"k": "2"}).json()
    assert [(h["id"], h["distance"]) for h in hits["results"]][:1] == [("scan-7", 0)]
    assert api.get("/api/health").json() == {"status": "ok", "items": 15}
    assert api.get("/api/index").json()["items"] == 15
    response = api.delete("/api/items/scan-7")
    assert response.status_code == 200
    assert response.json() == {"id": "scan-7", "removed": 1, "items": 14, "n_delta": 14}
    assert "scan-7" not in HammingIndex.load(served["index"])
    hits = api.post("/api/search", files=upload(served["query"]), data={"k": "14"}).json()
    assert "scan-7" not in [h["id"] for h in hits["results"]]


def test_replace_gives_an_id_the_new_image(served):
    api = client(served)
    first = {"file": ("a.png", noise_png(1), "image/png")}
    assert api.post("/api/items", files=first, data={"id": "x"}).status_code == 201
    second = {"file": ("b.png", noise_png(2), "image/png")}
    response = api.post("/api/items", files=second, data={"id": "x", "replace": "1"})
    assert response.status_code == 200 and response.json()["replaced"] is True
    assert HammingIndex.load(served["index"]).entries()[-1][1]["filename"] == "b.png"


def test_a_write_by_another_process_is_seen(served, capsys):
    api = client(served)
    assert api.get("/api/health").json()["items"] == 14
    new = served["index"].parent / "new.png"
    new.write_bytes(noise_png(3))
    rc, _, err = run_cli(capsys, "index", "add", "--index", served["index"], "--encoder",
                         served["encoder"], new)  # fmt: skip
    assert rc == 0, err
    assert api.get("/api/health").json()["items"] == 15
    hits = api.post("/api/search", files=upload(new), data={"k": "1"}).json()["results"]
    assert (hits[0]["id"], hits[0]["distance"]) == (str(new), 0)


def test_dicom_uids_come_back(served, art, tmp_path):
    grey = np.asarray(Image.open(art["paths"][0]).convert("L"), np.uint8)
    uids = {"StudyInstanceUID": "1.2.826.0.1.9", "SeriesInstanceUID": "1.2.826.0.1.9.1",
            "SOPInstanceUID": "1.2.826.0.1.9.1.1"}  # fmt: skip
    scan = write_dicom(tmp_path / "scan.dcm", grey, WindowCenter=128, WindowWidth=256, **uids)
    api = client(served)
    assert api.post("/api/items", files=upload(scan), data={"id": "ct-1"}).status_code == 201
    got = api.post("/api/search", files=upload(scan), data={"k": "15"}).json()
    want = {"study_instance_uid": "1.2.826.0.1.9", "series_instance_uid": "1.2.826.0.1.9.1",
            "sop_instance_uid": "1.2.826.0.1.9.1.1", "frame": None}  # fmt: skip
    assert got["query_dicom"] == want
    # The file holds fundus_0000's pixels: both at distance 0, the older one first.
    assert [(h["id"], h["distance"], h.get("dicom")) for h in got["results"][:2]] == [
        ("fundus_0000", 0, None), ("ct-1", 0, want)]  # fmt: skip


def _search(**kw):
    return ("post", "/api/search", kw)


def _add(**kw):
    return ("post", "/api/items", kw)


PNG = ("q.png", None, "image/png")  # None: the query image's bytes
MISUSE = {
    "no file": (_search(data={"k": "3"}), 400, "no image: send it as the multipart form field 'file'"),
    "empty file": (_search(files={"file": ("e.png", b"", "image/png")}), 400, "upload 'e.png': the file is empty"),
    "not an image": (_search(files={"file": ("notes.txt", b"hello", "text/plain")}), 422, "cannot read image upload 'notes.txt': not a recognised image format"),
    "truncated png": (_search(files={"file": ("cut.png", "CUT", "image/png")}), 422, "upload 'cut.png'"),
    "k zero": (_search(files={"file": PNG}, data={"k": "0"}), 400, "k must be an integer >= 1, got 0"),
    "k text": (_search(files={"file": PNG}, data={"k": "ten"}), 400, "'k' must be an integer, got 'ten'"),
    "frame out of range": (_search(files={"file": PNG}, data={"frame": "3"}), 422, "frame 3 out of range: the file has 1 frame(s)"),
    "two files": (_search(files=[("file", PNG), ("file", PNG)]), 400, "Too many files. Maximum number of files is 1."),
    "add without id": (_add(files={"file": PNG}), 400, "an id is needed (form field 'id'), got none"),
    "add control id": (_add(files={"file": PNG}, data={"id": "a\x1bb"}), 400, "with control characters"),
    "add control label": (_add(files={"file": PNG}, data={"id": "x", "label": "a\nb"}), 400, "a label is at most 256 printable characters"),
    "add taken id": (_add(files={"file": PNG}, data={"id": "fundus_0001"}), 409, "id 'fundus_0001' is already in"),
    "remove unknown id": (("delete", "/api/items/nope", {}), 404, "id 'nope' is not in"),
    "unknown route": (("get", "/api/nothing", {}), 404, "Not Found"),
    "wrong method": (("get", "/api/search", {}), 405, "Method Not Allowed"),
}  # fmt: skip


@pytest.mark.parametrize("case", MISUSE, ids=list(MISUSE))
def test_misuse_is_refused_with_a_clear_error(served, case):
    (method, path, kwargs), status, message = MISUSE[case]
    kwargs = dict(kwargs)
    if "files" in kwargs:
        raw = served["query"].read_bytes()
        pairs = kwargs["files"].items() if isinstance(kwargs["files"], dict) else kwargs["files"]
        kwargs["files"] = [
            (field, (name, {None: raw, "CUT": raw[: len(raw) // 2]}.get(body, body), kind))
            for field, (name, body, kind) in pairs
        ]
    before = HammingIndex.load(served["index"]).ids
    response = getattr(client(served), method)(path, **kwargs)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    assert response.headers["cache-control"] == "no-store"
    assert HammingIndex.load(served["index"]).ids == before  # nothing changed


@pytest.mark.parametrize(
    "headers, status, message",
    [
        ({}, 401, "this service needs a token: send 'Authorization: Bearer TOKEN'"),
        ({"Authorization": "Bearer wrong-token-of-the-ward"}, 401, "wrong token"),
        ({"Authorization": f"Basic {TOKEN}"}, 401, "wrong token"),
        ({"Authorization": f"Bearer {TOKEN}"}, 200, None),
    ],
    ids=["missing", "wrong", "other scheme", "right"],
)
@pytest.mark.parametrize("route", ["health", "index", "search", "add", "remove"])
def test_every_api_request_needs_the_token(served, headers, status, message, route):
    method, path, kwargs = {
        "health": ("get", "/api/health", {}),
        "index": ("get", "/api/index", {}),
        "search": ("post", "/api/search", {"files": upload(served["query"])}),
        "add": ("post", "/api/items", {"files": upload(served["query"]), "data": {"id": "n"}}),
        "remove": ("delete", "/api/items/fundus_0001", {}),
    }[route]
    response = getattr(client(served, token=TOKEN), method)(path, headers=headers, **kwargs)
    want = {"add": 201}.get(route, 200) if status == 200 else status
    assert response.status_code == want, response.text
    if message is not None:
        assert response.json() == {"error": message}
        assert response.headers["www-authenticate"] == "Bearer"
    changed = status == 200 and route in ("add", "remove")  # refused: nothing changes
    assert len(HammingIndex.load(served["index"])) == 14 + changed * (1 if route == "add" else -1)


def test_the_page_needs_no_token_and_asks_for_it(served):
    page = client(served, token=TOKEN).get("/")
    assert page.status_code == 200 and "const TOKEN_REQUIRED = true;" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "const TOKEN_REQUIRED = false;" in client(served).get("/").text


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_upload_over_the_limit_is_refused(served, chunked):
    api = client(served, max_upload_bytes=4096)
    body = served["query"].read_bytes() + b"\0" * 5000
    if chunked:  # no Content-Length: counted as it arrives
        boundary = "b0undary"
        payload = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                   f'filename="big.png"\r\n\r\n').encode() + body + f"\r\n--{boundary}--\r\n".encode()  # fmt: skip
        response = api.post("/api/search", content=iter([payload[:3000], payload[3000:]]),
                            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})  # fmt: skip
        assert "content-length" not in response.request.headers
    else:
        response = api.post("/api/search", files={"file": ("big.png", body, "image/png")})
    assert response.status_code == 413
    assert response.json() == {"error": "the upload is larger than this service's limit of 4096 bytes"}  # fmt: skip


@pytest.mark.parametrize(
    "host, loopback",
    [("127.0.0.1", True), ("127.1.2.3", True), ("localhost", True), ("::1", True),
     ("[::1]", True), ("0.0.0.0", False), ("::", False), ("192.168.1.4", False),
     ("example.org", False)],
)  # fmt: skip
def test_loopback_hosts(host, loopback):
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    "argv, env, message",
    [
        (["--host", "0.0.0.0"], {}, "error: --host 0.0.0.0 is not loopback: other machines could search and change the index, so a token is needed (--token or $YNET_SERVE_TOKEN); every API request must then carry 'Authorization: Bearer TOKEN'"),
        (["--host", "0.0.0.0", "--token", "short"], {}, "error: the token must be at least 16 printable characters, got 5; e.g. python -c 'import secrets; print(secrets.token_urlsafe())'"),
        (["--host", "0.0.0.0"], {"YNET_SERVE_TOKEN": "short"}, "error: the token must be at least 16 printable characters, got 5"),
        (["--port", "70000"], {}, "error: --port must be 0 to 65535, got 70000"),
        (["--max-upload-mb", "0"], {}, "error: --max-upload-mb must be > 0, got 0"),
    ],
    ids=["no token off loopback", "short token", "short token from env", "bad port", "no upload"],
)  # fmt: skip
def test_serve_refuses_to_start(served, capsys, monkeypatch, argv, env, message):
    monkeypatch.delenv("YNET_SERVE_TOKEN", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    base = ["serve", "--index", served["index"], "--encoder", served["encoder"]]
    assert cli.main([str(a) for a in [*base, *argv]]) == 1
    assert capsys.readouterr().err.startswith(message)


def test_serve_refuses_a_missing_index(served, tmp_path, capsys):
    argv = ["serve", "--index", tmp_path / "none", "--encoder", served["encoder"]]
    assert cli.main([str(a) for a in argv]) == 1
    assert (
        capsys.readouterr().err
        == f"error: no index at {tmp_path / 'none'}: index.json is missing\n"
    )


@pytest.mark.parametrize("model", ["encoder.onnx", "encoder.tflite", "encoder_int8.tflite"])
def test_concurrent_searches_give_the_sequential_answers(art, tmp_path, model, capsys):
    """Requests run in threads at once; a LiteRT interpreter is not made for that, so its
    runtime takes turns: every answer equals the one-at-a-time answer."""
    from concurrent.futures import ThreadPoolExecutor

    encoder, index = art["dir"] / model, tmp_path / "index"
    rc, _, err = run_cli(capsys, "index", "build", "--encoder", encoder, "--data", art["data"],
                         "--out", index)  # fmt: skip
    assert rc == 0, err
    service = SearchService(index, encoder)
    queries = art["paths"] * 4
    one_by_one = [service.search(q, q.name, 3) for q in queries]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda q: service.search(q, q.name, 3), queries))
    assert together == one_by_one
    train = [s == "train" for s in art["split"]] * 4
    assert [r["results"][0]["distance"] == 0 for r in one_by_one] == train  # finds itself


def test_a_write_gives_up_on_a_busy_index_with_503(served):
    from deploy.index import writer_lock

    service = SearchService(served["index"], served["encoder"], lock_timeout=0.2)
    api = TestClient(create_app(service))
    with writer_lock(served["index"]):  # another writer holds the index
        response = api.post("/api/items", files=upload(served["query"]), data={"id": "late"})
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert "gave up waiting after 0.2 s" in response.json()["error"]
    assert "late" not in HammingIndex.load(served["index"])
    assert (
        api.post("/api/items", files=upload(served["query"]), data={"id": "late"}).status_code
        == 201
    )
