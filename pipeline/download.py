"""Download the released scGPT checkpoint files over HTTPS (standard library only), resumably.

Sources are Google Drive file ids (a large file is answered with an HTML "can't scan for viruses" page whose form
must be resubmitted) or plain HTTP(S) URLs, e.g. a lab mirror folder. A transfer goes to `<file>.part`; a rerun
asks for the rest with `Range: bytes=N-` and appends on 206, or starts over on 200 (the server ignored the range).

No checksums of the released files are recorded here: they could not be established on the machines this project
is built on (no network), and an invented one would refuse the real file. Checksums are verified when the user
gives them (`ccfm fetch-scgpt --sha256 FILE=HEX`); every download is checked against the size the server announced.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Protocol

from ccfm.atomic import write_json_atomic
from ccfm.errors import CCFMError
from ccfm.scgpt.checkpoint import CHECKPOINT_FILES

# The whole-human model ("scGPT_human", https://drive.google.com/drive/folders/1oWh_-ZRdhtoGQ2Fw24HP41FgLoomVo-y,
# linked from the scGPT README). These per-file ids are the ones several independent public download scripts use
# for that folder; they could not be checked from here: the validation `ccfm extract` makes, and the comparison
# of args.json with the released config, are what vouch for them.
RELEASE_DRIVE_IDS: Mapping[str, str] = {
    "best_model.pt": "14AebJfGOUF047Eg40hk57HCtrb0fyDTm",
    "vocab.json": "1H3E_MJ-Dl36AQV6jLbna2EdvgPaqvqcC",
    "args.json": "1hh2zGKyWAx3DyovD30GStZ3QlzmSqdk1",
}
SCGPT_README = "https://github.com/bowang-lab/scGPT#pretrained-scgpt-model-zoo"
CHUNK_BYTES = 1 << 20
USER_AGENT = "ccfm-fetch-scgpt"
_DRIVE_ID = re.compile(r"^[A-Za-z0-9_-]{20,}$")
_DRIVE_LINK = re.compile(r"/file/d/([A-Za-z0-9_-]{20,})|[?&]id=([A-Za-z0-9_-]{20,})")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


class ProgressBar(Protocol):
    """What a transfer reports to: tqdm satisfies it."""

    def update(self, n: int) -> object: ...

    def close(self) -> None: ...


# (file name, total bytes or None when unknown, bytes already on disk) -> a progress bar
ProgressFactory = Callable[[str, int | None, int], ProgressBar]


@dataclass(frozen=True)
class Source:
    """Where one checkpoint file is downloaded from."""

    name: str  # file name in the checkpoint folder: best_model.pt, vocab.json or args.json
    url: str  # the first URL requested
    drive: bool  # a Google Drive download: its virus-scan confirmation page is followed once


def manual_placement(out: Path) -> str:
    """The one sentence that says how to do without the download."""
    return (
        f"to place the files by hand, download the scGPT_human folder linked from the scGPT README ({SCGPT_README}), "
        f"put best_model.pt, vocab.json and args.json in {out}, then run `ccfm extract DATA --scgpt {out} ...`"
    )


def drive_source(name: str, file_id: str, drive_url: str) -> Source:
    query = urllib.parse.urlencode({"id": file_id, "export": "download"})
    return Source(name, f"{drive_url}?{query}", drive=True)


def _per_file_source(name: str, value: str, drive_url: str) -> Source:
    if value.startswith(("http://", "https://")):
        link = _DRIVE_LINK.search(value) if "drive.google.com" in value else None
        if link is not None:
            return drive_source(name, link.group(1) or link.group(2), drive_url)
        return Source(name, value, drive=False)
    if _DRIVE_ID.match(value):
        return drive_source(name, value, drive_url)
    raise CCFMError(f"--source {name}={value}: expected an http(s) URL or a Google Drive file id")


def resolve_sources(values: Sequence[str], drive_url: str) -> dict[str, Source]:
    """Each checkpoint file's source from `--source` values (the released Drive files where none is given).

    A value `FILE=URL_OR_DRIVE_ID` sets one file; a bare `http(s)://BASE` is a mirror folder holding all three as
    BASE/best_model.pt, BASE/vocab.json, BASE/args.json. Per-file values win over a base.
    """
    base: str | None = None
    per_file: dict[str, Source] = {}
    for value in values:
        head, sep, tail = value.partition("=")
        if sep and not re.search(r"[/:]", head):  # FILE=..., not a URL whose query holds "="
            if head not in CHECKPOINT_FILES:
                raise CCFMError(f"--source {value}: unknown file {head!r}; name one of {', '.join(CHECKPOINT_FILES)}")
            per_file[head] = _per_file_source(head, tail, drive_url)
        elif value.startswith(("http://", "https://")):
            if "/drive/folders/" in value:
                raise CCFMError(
                    f"--source {value}: a Google Drive folder cannot be fetched file by file; give each file's "
                    "link or id as --source best_model.pt=ID (likewise vocab.json, args.json)"
                )
            if base is not None:
                raise CCFMError(f"--source: two base URLs ({base}, {value}); give one, plus FILE=... overrides")
            base = value.rstrip("/")
        else:
            raise CCFMError(
                f"--source {value}: expected a base URL (https://host/folder) or FILE=URL_OR_DRIVE_ID "
                f"with FILE one of {', '.join(CHECKPOINT_FILES)}"
            )
    sources: dict[str, Source] = {}
    for name in CHECKPOINT_FILES:
        if name in per_file:
            sources[name] = per_file[name]
        elif base is not None:
            sources[name] = Source(name, f"{base}/{urllib.parse.quote(name)}", drive=False)
        else:
            sources[name] = drive_source(name, RELEASE_DRIVE_IDS[name], drive_url)
    return sources


def parse_checksums(values: Sequence[str]) -> dict[str, str]:
    """`FILE=HEX` values of `--sha256` as {file: lowercase hex digest}."""
    checksums: dict[str, str] = {}
    for value in values:
        name, _, digest = value.partition("=")
        if name not in CHECKPOINT_FILES or not _SHA256.match(digest):
            raise CCFMError(
                f"--sha256 {value}: expected FILE=HEX with FILE one of {', '.join(CHECKPOINT_FILES)} "
                "and HEX 64 hexadecimal digits (the output of sha256sum)"
            )
        checksums[name] = digest.lower()
    return checksums


def is_html_type(content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower() == "text/html"


def opens_like_html(head: bytes) -> bool:
    """True for a body that starts like a web page (`<!DOCTYPE html`, `<html`)."""
    return head.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html"))


class _ConfirmFormParser(HTMLParser):
    """Collects the download form (action and named inputs) and any link carrying a `confirm` token."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self.confirm_links: list[str] = []
        self._in_form = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {key: value or "" for key, value in attrs}
        if tag == "form" and self.action is None:
            self.action, self._in_form = found.get("action", ""), True
        elif tag == "input" and self._in_form and found.get("name") and found.get("type") != "submit":
            self.fields[found["name"]] = found.get("value", "")
        elif tag == "a" and "confirm=" in found.get("href", ""):
            self.confirm_links.append(found["href"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False


def drive_confirm_url(page: str, page_url: str) -> str | None:
    """The URL that Drive's "can't scan this file for viruses" page submits, or None for any other page.

    Current Drive pages hold a form (action drive.usercontent.google.com/download, hidden id, export, confirm,
    uuid); older ones a link `/uc?export=download&confirm=TOKEN&id=ID`.
    """
    parser = _ConfirmFormParser()
    parser.feed(page)
    if parser.action is not None and "confirm" in parser.fields:
        action = urllib.parse.urljoin(page_url, parser.action)
        return f"{action}?{urllib.parse.urlencode(parser.fields)}"
    if parser.confirm_links:
        return urllib.parse.urljoin(page_url, parser.confirm_links[0])
    return None


@dataclass(frozen=True)
class _Response:
    """An open HTTP response positioned at the first byte to store."""

    response: http.client.HTTPResponse
    offset: int  # bytes of the .part file kept (0: the response starts the file)
    total: int | None  # full file size announced by the server
    validator: str  # ETag or Last-Modified: lets a later resume ask "only if unchanged" (If-Range)


def _content_range(header: str | None) -> tuple[int | None, int | None]:
    """(start, total) of a `Content-Range: bytes START-END/TOTAL` header."""
    match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", header or "")
    if match is None:
        return None, None
    return int(match.group(1)), None if match.group(2) == "*" else int(match.group(2))


@dataclass(frozen=True)
class Downloader:
    """Fetches checkpoint files into a staging folder; messages name `out`, the folder the files are meant for."""

    out: Path  # the checkpoint folder being built (named in messages)
    timeout: float  # seconds a connection or a read may stall
    progress: ProgressFactory  # one progress bar per transfer

    def fetch(self, source: Source, dest: Path) -> bool:
        """Download `source` into `dest`; False when `dest` is already complete from the same source.

        `dest` appears only complete, with as many bytes as the server announced. An interrupted transfer keeps
        `dest.part` and raises CCFMError saying to rerun, which continues it with a Range request.
        `dest.source.json` records the URL (a file or part from another source is discarded) and the server's
        validator (ETag or Last-Modified, sent as If-Range so that a file changed meanwhile is sent whole).
        """
        part, meta = dest.with_name(dest.name + ".part"), dest.with_name(dest.name + ".source.json")
        known = _read_meta(meta)
        if known.get("url") != source.url:
            dest.unlink(missing_ok=True)
            part.unlink(missing_ok=True)
            known = {}
        if dest.is_file():
            return False
        offset = part.stat().st_size if part.is_file() else 0
        opened = self._open(source, offset, known.get("validator", ""))
        write_json_atomic(meta, {"url": source.url, "validator": opened.validator})
        size = self._copy(source, opened, part)
        if opened.total is not None and size != opened.total:
            raise CCFMError(
                f"the transfer of {source.name} stopped after {size:,} of {opened.total:,} bytes (kept in {part}); "
                "rerun the same command to resume it"
            )
        os.replace(part, dest)
        return True

    def _request(self, url: str, offset: int, validator: str) -> http.client.HTTPResponse:
        headers = {"User-Agent": USER_AGENT}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if validator:
                headers["If-Range"] = validator
        host = urllib.parse.urlsplit(url).netloc
        try:
            return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=self.timeout)
        except urllib.error.HTTPError as err:
            if err.code == 416 and offset:  # the part is as long as the file, or longer: start over
                raise _RangeRefused from err
            raise CCFMError(
                f"{host} answered HTTP {err.code} {err.reason} for {url}; check --source, "
                f"or {manual_placement(self.out)}"
            ) from err
        except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
            # offline, DNS failure, refused connection, timeout, TLS failure
            reason = " ".join(str(getattr(err, "reason", None) or err).split())
            raise CCFMError(f"cannot download from {host} ({reason}); {manual_placement(self.out)}") from err

    def _open(self, source: Source, offset: int, validator: str) -> _Response:
        """Request the file (from `offset`), following Drive's confirmation page once; refuse other web pages."""
        url, followed = source.url, False
        while True:
            try:
                response = self._request(url, offset, validator)
            except _RangeRefused:
                offset, validator = 0, ""
                continue
            content_type = response.headers.get("Content-Type", "")
            if is_html_type(content_type):
                page = response.read(CHUNK_BYTES).decode("utf-8", "replace")
                response.close()
                confirm = drive_confirm_url(page, response.url) if source.drive and not followed else None
                if confirm is None and source.drive:
                    raise _html_refusal(source, url, "Google Drive", " (download quota exceeded, or no access?)")
                if confirm is None:
                    raise _html_refusal(source, url)
                url, followed = confirm, True
                continue
            start, total = _content_range(response.headers.get("Content-Range"))
            validator = response.headers.get("ETag") or response.headers.get("Last-Modified") or ""
            if response.status == 206 and start != offset:  # not the range asked for: start over
                response.close()
                offset, validator = 0, ""
                continue
            if response.status == 206:
                return _Response(response, offset, total, validator)
            # 200: the server ignored the range (or the file changed since): the body is the whole file.
            length = response.headers.get("Content-Length")
            return _Response(response, 0, int(length) if length and length.isdigit() else None, validator)

    def _copy(self, source: Source, opened: _Response, part: Path) -> int:
        """Write the response body to `part` (appending when resuming); return the part's size."""
        bar = self.progress(source.name, opened.total, opened.offset)
        size, web_page = opened.offset, False
        try:
            with opened.response as response, open(part, "ab" if opened.offset else "wb") as handle:
                while chunk := self._read(response, source, size, part):
                    if size == 0 and opens_like_html(chunk):  # a page served as a download
                        web_page = True
                        break
                    handle.write(chunk)
                    size += len(chunk)
                    bar.update(len(chunk))
                handle.flush()
                os.fsync(handle.fileno())
        finally:
            bar.close()
        if web_page:
            part.unlink()
            raise _html_refusal(source, source.url)
        return size

    @staticmethod
    def _read(response: http.client.HTTPResponse, source: Source, size: int, part: Path) -> bytes:
        try:
            return response.read(CHUNK_BYTES)
        except (OSError, http.client.HTTPException) as err:  # reset, timeout, incomplete chunked body
            raise CCFMError(
                f"the transfer of {source.name} broke off after {size:,} bytes ({err}; kept in {part}); "
                "rerun the same command to resume it"
            ) from err


class _RangeRefused(Exception):
    """HTTP 416: the server cannot serve the requested resume offset."""


def _html_refusal(source: Source, url: str, sender: str = "the server", why: str = "") -> CCFMError:
    return CCFMError(
        f"{sender} sent a web page instead of {source.name} ({url}){why}; that is an error or sign-in page, not the "
        "file: check --source, or download the file in a browser and place it by hand"
    )


def _read_meta(path: Path) -> dict[str, str]:
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}
