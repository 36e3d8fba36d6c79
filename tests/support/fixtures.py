"""Load the recorded provider traffic in tests/fixtures into one shape.

Formats (see tests/fixtures/SOURCES.md): pydantic-ai VCR yaml, envoy go-vcr v2 yaml,
langchaingo httprr traces, and vercel ``*.chunks.txt`` (one SSE data payload a line).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# Kept in the repository (sources and licences in tests/fixtures/SOURCES.md) so a clone runs alone.
FIXTURES = Path(
    os.environ.get("CHROMAGENT_FIXTURES", Path(__file__).resolve().parents[1] / "fixtures")
)


@dataclass
class Interaction:
    method: str
    url: str
    request_body: Any  # parsed JSON (dict) when it was JSON, else str
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def content_type(self) -> str:
        for k, v in self.headers.items():
            if k.lower() == "content-type":
                return v
        return ""

    @property
    def is_stream(self) -> bool:
        ct = self.content_type
        return (
            "event-stream" in ct
            or "ndjson" in ct
            or self.body.lstrip().startswith((b"data:", b"event:"))
        )


def fixture_path(*parts: str) -> Path:
    return FIXTURES.joinpath(*parts)


def _flat_headers(h: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in (h or {}).items():
        out[str(k)] = str(v[0]) if isinstance(v, list) and v else str(v)
    return out


def _maybe_json(text: Any) -> Any:
    if isinstance(text, str):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def load_yaml(path: Path) -> list[Interaction]:
    data = yaml.safe_load(path.read_text())
    out = []
    for it in data["interactions"]:
        req, resp = it["request"], it["response"]
        req_body = req["parsed_body"] if "parsed_body" in req else _maybe_json(req.get("body"))
        status = resp.get("status")
        code = status["code"] if isinstance(status, dict) else resp.get("code", 200)
        headers = _flat_headers(resp.get("headers"))
        if "parsed_body" in resp:
            body = json.dumps(resp["parsed_body"]).encode()
        else:
            raw = resp.get("body")
            text = raw.get("string", "") if isinstance(raw, dict) else (raw or "")
            body = text.encode() if isinstance(text, str) else bytes(text)
            if not any(k.lower() == "content-type" for k in headers) and body.lstrip()[:1] in (
                b"{",
                b"[",
            ):
                headers["content-type"] = "application/json"
        out.append(
            Interaction(
                method=req.get("method", "POST"),
                url=req.get("uri") or req.get("url") or "",
                request_body=req_body,
                status=int(code),
                headers=headers,
                body=body,
            )
        )
    return out


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    rest = body
    while rest:
        line, _, rest = rest.partition(b"\r\n")
        size = int(line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        rest = rest[size + 2 :]
    return bytes(out)


def load_httprr(path: Path) -> list[Interaction]:
    data = path.read_bytes()
    header, _, rest = data.partition(b"\n")
    assert header.startswith(b"httprr trace v1"), path
    out = []
    while rest:
        sizes, _, rest = rest.partition(b"\n")
        if not sizes.strip():
            break
        req_len, resp_len = (int(x) for x in sizes.split())
        req, resp, rest = (
            rest[:req_len],
            rest[req_len : req_len + resp_len],
            rest[req_len + resp_len :],
        )
        req_head, _, req_body = req.partition(b"\r\n\r\n")
        method, url, _ = req_head.split(b"\r\n", 1)[0].decode().split(" ", 2)
        resp_head, _, resp_body = resp.partition(b"\r\n\r\n")
        head_lines = resp_head.decode().split("\r\n")
        status = int(head_lines[0].split(" ")[1])
        headers = {}
        for line in head_lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip()] = v.strip()
        if headers.get("Transfer-Encoding", "").lower() == "chunked":
            resp_body = _dechunk(resp_body)
            headers.pop("Transfer-Encoding")
        out.append(
            Interaction(
                method, url, _maybe_json(req_body.decode() or None), status, headers, resp_body
            )
        )
    return out


def load_chunks(path: Path) -> list[bytes]:
    """A vercel ``*.chunks.txt``: one provider SSE data payload per line."""
    return [line.encode() for line in path.read_text().splitlines() if line.strip()]


def chunks_as_sse(payloads: list[bytes], *, with_event_type: bool = False) -> bytes:
    """Rebuild an SSE body from data payloads (Anthropic streams also carry ``event:`` lines)."""
    out = bytearray()
    for p in payloads:
        if with_event_type:
            out += b"event: " + json.loads(p)["type"].encode() + b"\n"
        out += b"data: " + p + b"\n\n"
    return bytes(out)


def load(path: Path) -> list[Interaction]:
    if path.suffix == ".yaml":
        return load_yaml(path)
    if path.suffix == ".httprr":
        return load_httprr(path)
    raise ValueError(f"not an interaction file: {path}")


def provider_files(provider: str, suffixes: tuple[str, ...] = (".yaml", ".httprr")) -> list[Path]:
    d = FIXTURES / provider
    return sorted(p for p in d.iterdir() if p.suffix in suffixes)
