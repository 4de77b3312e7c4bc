"""`ccfm fetch-scgpt` against a loopback HTTP server (127.0.0.1, ephemeral port) serving a toy checkpoint."""

from __future__ import annotations

import hashlib
import http.server
import json
import socket
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from clitools import invoke
from clitools import refused as cli_refused

from ccfm.config import FetchScgptConfig
from ccfm.errors import CCFMError
from ccfm.scgpt.checkpoint import CHECKPOINT_FILES
from pipeline import fetch_scgpt
from pipeline.download import RELEASE_DRIVE_IDS, drive_confirm_url, resolve_sources

DRIVE_UUID = "0f3c9a6e-uuid-from-the-page"
CONFIRM_PAGE = """<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>
<p>Google Drive can't scan this file for viruses.</p>
<form id="download-form" action="/download" method="get">
<input type="submit" id="uc-download-link" value="Download anyway"/>
<input type="hidden" name="id" value="{id}"><input type="hidden" name="export" value="download">
<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="{uuid}">
</form></body></html>"""


@dataclass
class Served:
    """What the loopback server serves, how it misbehaves, and every request it saw."""

    base: str = ""  # http://127.0.0.1:PORT
    files: dict[str, bytes] = field(default_factory=dict)  # URL path -> body
    content_types: dict[str, str] = field(default_factory=dict)  # URL path -> Content-Type (else octet-stream)
    drop_after: dict[str, int] = field(default_factory=dict)  # URL path -> bytes sent before hanging up, once
    ignore_range: bool = False  # answer every request with 200 and the whole file
    drive: dict[str, str] = field(default_factory=dict)  # Drive file id -> URL path of its body
    confirm_first: set[str] = field(default_factory=set)  # Drive ids answered with the confirmation page first
    seen: list[tuple[str, dict[str, str]]] = field(default_factory=list)  # (path?query, headers)

    def requests_for(self, fragment: str) -> list[dict[str, str]]:
        return [headers for path, headers in self.seen if fragment in path]


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 - the http.server hook name
        served: Served = self.server.served  # type: ignore[attr-defined]
        served.seen.append((self.path, dict(self.headers)))
        url = urllib.parse.urlsplit(self.path)
        key = url.path
        if url.path == "/download":  # Google Drive's endpoint
            query = dict(urllib.parse.parse_qsl(url.query))
            file_id = query.get("id", "")
            confirmed = query.get("confirm") == "t" and query.get("uuid") == DRIVE_UUID
            if file_id in served.confirm_first and not confirmed:
                page = CONFIRM_PAGE.format(id=file_id, uuid=DRIVE_UUID).encode()
                return self._send(200, page, "text/html; charset=utf-8")
            key = served.drive.get(file_id, "")
        if key not in served.files:
            return self._send(404, b"<html><body>Not Found</body></html>", "text/html")
        self._send_file(served, key)

    def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _send_file(self, served: Served, key: str) -> None:
        body = served.files[key]
        etag = f'"{hashlib.sha256(body).hexdigest()[:16]}"'
        start = 0
        wanted = self.headers.get("Range", "")
        if wanted.startswith("bytes=") and not served.ignore_range and self.headers.get("If-Range", etag) == etag:
            start = int(wanted[len("bytes=") :].rstrip("-"))
        status = 206 if start else 200
        headers = {"ETag": etag, "Accept-Ranges": "bytes"}
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
        self.send_response(status)
        self.send_header("Content-Type", served.content_types.get(key, "application/octet-stream"))
        self.send_header("Content-Length", str(len(body) - start))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        drop = served.drop_after.pop(key, None)
        self.wfile.write(body[start:] if drop is None else body[start : start + drop])
        self.close_connection = True  # after a drop the client sees the connection end early


@pytest.fixture
def server(toy_scgpt_dir: Path) -> Iterator[Served]:
    """A mirror folder /mirror/{best_model.pt,vocab.json,args.json} holding the toy checkpoint."""
    served = Served(files={f"/mirror/{name}": (toy_scgpt_dir / name).read_bytes() for name in CHECKPOINT_FILES})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.served = served  # type: ignore[attr-defined]
    served.base = f"http://127.0.0.1:{httpd.server_port}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield served
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def fetch(*args: object) -> object:
    return invoke("fetch-scgpt", *args)


def refused(*args: object, match: str) -> str:
    """`ccfm fetch-scgpt ARGS` refuses cleanly with one `error:` line containing `match`."""
    return cli_refused("fetch-scgpt", *args, match=match)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_same_files(out: Path, original: Path) -> None:
    assert sorted(p.name for p in out.iterdir()) == sorted(CHECKPOINT_FILES)
    for name in CHECKPOINT_FILES:
        assert (out / name).read_bytes() == (original / name).read_bytes(), name


def assert_nothing_left(out: Path) -> None:
    assert not out.exists()
    assert not fetch_scgpt.staging_folder(out).exists()


def test_complete_download_is_verified_validated_and_placed(server: Served, toy_scgpt_dir: Path, tmp_path: Path):
    out = tmp_path / "scgpt_human"
    checks = [f"--sha256={name}={sha256(toy_scgpt_dir / name)}" for name in CHECKPOINT_FILES]
    result = fetch("--out", out, "--source", f"{server.base}/mirror/", *checks)
    assert result.exit_code == 0, result.output
    assert_same_files(out, toy_scgpt_dir)
    assert not fetch_scgpt.staging_folder(out).exists()
    assert not out.with_name(out.name + ".partial.lock").exists()
    assert all("Range" not in headers for _, headers in server.seen)


def test_interrupted_transfer_resumes_with_a_range_request(server: Served, toy_scgpt_dir: Path, tmp_path: Path):
    out, cut = tmp_path / "scgpt_human", 100_000
    total = len(server.files["/mirror/best_model.pt"])
    server.drop_after["/mirror/best_model.pt"] = cut
    refused("--out", out, "--source", f"{server.base}/mirror", match=f"stopped after {cut:,} of {total:,} bytes")
    part = fetch_scgpt.staging_folder(out) / "best_model.pt.part"
    assert part.stat().st_size == cut and not out.exists()

    result = fetch("--out", out, "--source", f"{server.base}/mirror")
    assert result.exit_code == 0, result.output
    resumed = server.requests_for("best_model.pt")[-1]
    assert resumed["Range"] == f"bytes={cut}-"
    assert resumed["If-Range"].startswith('"')  # the ETag of the first response: no splicing of a changed file
    assert len(server.requests_for("vocab.json")) == 1  # complete files in staging are not fetched again
    assert_same_files(out, toy_scgpt_dir)
    assert not fetch_scgpt.staging_folder(out).exists()


def test_a_server_that_ignores_the_range_restarts_from_zero(server: Served, toy_scgpt_dir: Path, tmp_path: Path):
    out = tmp_path / "scgpt_human"
    server.drop_after["/mirror/best_model.pt"] = 100_000
    server.ignore_range = True
    refused("--out", out, "--source", f"{server.base}/mirror", match="rerun the same command to resume")
    result = fetch("--out", out, "--source", f"{server.base}/mirror")
    assert result.exit_code == 0, result.output
    assert server.requests_for("best_model.pt")[-1]["Range"] == "bytes=100000-"  # asked, answered 200
    assert_same_files(out, toy_scgpt_dir)


def test_wrong_checksum_is_refused_and_leaves_nothing(server: Served, toy_scgpt_dir: Path, tmp_path: Path):
    out = tmp_path / "scgpt_human"
    good = f"args.json={sha256(toy_scgpt_dir / 'args.json')}"
    bad = "best_model.pt=" + "0" * 64
    refused(
        "--out",
        out,
        "--source",
        f"{server.base}/mirror",
        "--sha256",
        good,
        "--sha256",
        bad,
        match=f"best_model.pt has sha256 {sha256(toy_scgpt_dir / 'best_model.pt')}, but --sha256 expects 000",
    )
    assert_nothing_left(out)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/html; charset=utf-8", b"<html><body>Sign in to continue</body></html>"),
        ("application/octet-stream", b"\n<!DOCTYPE html><html><body>quota exceeded</body></html>"),
    ],
    ids=["declared-html", "sniffed-html"],
)
def test_an_html_page_instead_of_the_file_is_refused(
    server: Served, tmp_path: Path, content_type: str, body: bytes
) -> None:
    out = tmp_path / "scgpt_human"
    server.files["/mirror/best_model.pt"] = body
    server.content_types["/mirror/best_model.pt"] = content_type
    refused("--out", out, "--source", f"{server.base}/mirror", match="web page instead of best_model.pt")
    assert not out.exists()
    assert not (fetch_scgpt.staging_folder(out) / "best_model.pt.part").exists()


def test_offline_says_how_to_place_the_files_by_hand(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "scgpt_human"
    line = refused("--out", out, "--source", f"http://127.0.0.1:{port}/mirror", match=f"127.0.0.1:{port}")
    for words in ("refused", "by hand", "scGPT_human", "best_model.pt, vocab.json and args.json", str(out)):
        assert words in line, line
    assert f"ccfm extract DATA --scgpt {out}" in line
    assert_nothing_left(out)


def test_a_missing_file_on_the_server_names_the_status(server: Served, tmp_path: Path) -> None:
    del server.files["/mirror/vocab.json"]
    refused("--out", tmp_path / "o", "--source", f"{server.base}/mirror", match="HTTP 404 Not Found")


def test_drive_confirmation_page_is_followed(server: Served, toy_scgpt_dir: Path, tmp_path: Path) -> None:
    """No --source: the released Drive ids, with Drive's endpoint pointed at the loopback server."""
    server.drive = {file_id: f"/mirror/{name}" for name, file_id in RELEASE_DRIVE_IDS.items()}
    big = RELEASE_DRIVE_IDS["best_model.pt"]
    server.confirm_first = {big}
    out = tmp_path / "scgpt_human"
    fetch_scgpt.run(FetchScgptConfig(out=out, drive_url=f"{server.base}/download"))
    assert_same_files(out, toy_scgpt_dir)
    first, second = (dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(p).query)) for p, _ in server.seen[-2:])
    assert first == {"id": big, "export": "download"}
    assert second == {"id": big, "export": "download", "confirm": "t", "uuid": DRIVE_UUID}


def test_drive_page_without_a_confirmation_form_is_refused(server: Served, tmp_path: Path) -> None:
    server.files["/mirror/args.json"] = b"<html><body>Too many users have viewed this file</body></html>"
    server.content_types["/mirror/args.json"] = "text/html"
    server.drive = {file_id: f"/mirror/{name}" for name, file_id in RELEASE_DRIVE_IDS.items()}
    with pytest.raises(CCFMError, match="Google Drive sent a web page instead of args.json"):
        fetch_scgpt.run(FetchScgptConfig(out=tmp_path / "o", drive_url=f"{server.base}/download"))


def test_weights_that_do_not_match_args_json_are_refused(server: Served, toy_scgpt_dir: Path, tmp_path: Path):
    args = json.loads((toy_scgpt_dir / "args.json").read_text())
    args["nlayers"] += 2
    server.files["/mirror/args.json"] = json.dumps(args).encode()
    out = tmp_path / "scgpt_human"
    line = refused("--out", out, "--source", f"{server.base}/mirror", match="not a loadable scGPT checkpoint")
    assert "nlayers=4 but best_model.pt has nlayers=2" in line
    assert_nothing_left(out)


def test_an_existing_folder_is_refused_unless_overwrite(server: Served, toy_scgpt_dir: Path, tmp_path: Path):
    out = tmp_path / "scgpt_human"
    out.mkdir()
    (out / "vocab.json").write_text("{}")
    refused("--out", out, "--source", f"{server.base}/mirror", match="already exists")
    assert server.seen == []  # refused before any transfer
    result = fetch("--out", out, "--source", f"{server.base}/mirror", "--overwrite")
    assert result.exit_code == 0, result.output
    assert_same_files(out, toy_scgpt_dir)


@pytest.mark.parametrize(
    ("option", "match"),
    [
        ("--source=model.pt=https://host/x", "unknown file 'model.pt'"),
        ("--source=best_model.pt=not a link", "expected an http(s) URL or a Google Drive file id"),
        ("--source=ftp-mirror", "expected a base URL"),
        ("--source=https://drive.google.com/drive/folders/1oWh_-ZRdhtoGQ2Fw24HP41FgLoomVo-y", "Drive folder"),
        ("--sha256=best_model.pt=abc", "64 hexadecimal digits"),
        ("--timeout=0", "--timeout must be a number in (0, 3600]"),
    ],
)
def test_malformed_options_are_refused(tmp_path: Path, option: str, match: str) -> None:
    refused("--out", tmp_path / "o", option, match=match)
    assert_nothing_left(tmp_path / "o")


def test_sources_from_a_base_with_per_file_overrides() -> None:
    drive = "https://drive.usercontent.google.com/download"
    link = "https://drive.google.com/file/d/1AbCdEfGhIjKlMnOpQrStUvWxYz012345/view?usp=sharing"
    sources = resolve_sources(
        ["https://lab.example/scgpt/", f"vocab.json={link}", "args.json=https://x.org/a?b=c"], drive
    )
    assert sources["best_model.pt"].url == "https://lab.example/scgpt/best_model.pt"
    assert not sources["best_model.pt"].drive
    assert sources["vocab.json"].drive
    assert sources["vocab.json"].url == f"{drive}?id=1AbCdEfGhIjKlMnOpQrStUvWxYz012345&export=download"
    assert sources["args.json"].url == "https://x.org/a?b=c"
    assert all(s.drive for s in resolve_sources([], drive).values())


def test_old_style_drive_confirmation_link() -> None:
    page = '<html><a id="uc-download-link" href="/uc?export=download&amp;confirm=AbC1&amp;id=XYZ">Download</a>'
    assert drive_confirm_url(page, "https://drive.google.com/uc?id=XYZ") == (
        "https://drive.google.com/uc?export=download&confirm=AbC1&id=XYZ"
    )
    assert drive_confirm_url("<html><body>Not found</body></html>", "https://drive.google.com/x") is None
