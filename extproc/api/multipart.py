"""`multipart/form-data` bodies: parsed once, re-encoded from the original part bytes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from extproc.errors import MultipartError

_BOUNDARY = re.compile(r'boundary=(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)
_UNESCAPE = re.compile(r"\\(.)")
_DISPOSITION_PARAM = re.compile(r';\s*(name|filename)="((?:[^"\\]|\\.)*)"', re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class UploadedFile:
    """A file part: its name, type and bytes (never decoded; written back as it came unless replaced)."""

    filename: str
    content_type: str
    content: bytes
    raw_part: bytes = field(default=b"", repr=False, compare=False)

    def read(self) -> bytes:
        return self.content

    def __len__(self) -> int:
        return len(self.content)


def boundary_of(content_type: str) -> str:
    match = _BOUNDARY.search(content_type)
    if not match:
        raise MultipartError("the content-type has no boundary")
    return match.group(1) or match.group(2)


def _parse_part(raw: bytes) -> tuple[str, str | UploadedFile]:
    head, sep, content = raw.partition(b"\r\n\r\n")
    if not sep:
        raise MultipartError("a part has no header/body separator")
    name = filename = None
    part_type = "application/octet-stream"
    for line in head.decode("utf-8", "replace").split("\r\n"):  # names are written back as UTF-8
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "content-disposition":
            for param, quoted in _DISPOSITION_PARAM.findall(value):
                param_value = _UNESCAPE.sub(r"\1", quoted)  # a quoted-string's \" and \\
                if param.lower() == "name":
                    name = param_value
                else:
                    filename = param_value
        elif key == "content-type":
            part_type = value.strip()
    if not name:
        raise MultipartError("a part has no name")
    if filename is not None:
        return name, UploadedFile(filename, part_type, content, raw)
    try:
        return name, content.decode("utf-8")
    except UnicodeDecodeError:
        raise MultipartError(f"field {name!r} is not valid UTF-8") from None


@dataclass(slots=True)
class MultipartBody:
    """Fields in order, with their raw bytes so unchanged parts are written back as they came."""

    boundary: str
    fields: list[tuple[str, Any]]

    @classmethod
    def parse(cls, body: bytes, content_type: str) -> MultipartBody:
        boundary = boundary_of(content_type)
        delimiter = b"--" + boundary.encode("latin-1")
        start = body.find(delimiter)
        if start < 0:
            raise MultipartError("the body does not contain its boundary")
        chunks = body[start + len(delimiter) :].split(b"\r\n" + delimiter)
        if not chunks[-1].startswith(b"--"):
            raise MultipartError("the body is truncated (no closing boundary)")
        fields: list[tuple[str, Any]] = []
        for chunk in chunks[:-1]:
            if not chunk.startswith(b"\r\n"):
                raise MultipartError("a boundary line is malformed")
            fields.append(_parse_part(chunk[2:]))
        if not fields:
            raise MultipartError("the body has no parts")
        return cls(boundary, fields)

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for name, value in self.fields:
            if name.endswith("[]"):
                data.setdefault(name, []).append(value)
            elif name in data:
                raise MultipartError(f"field {name!r} appears more than once")
            else:
                data[name] = value
        return data

    @classmethod
    def from_data(cls, data: dict[str, Any], content_type: str) -> MultipartBody:
        fields: list[tuple[str, Any]] = []
        for name, value in data.items():
            values = value if name.endswith("[]") and isinstance(value, list) else [value]
            fields.extend((name, item) for item in values if item is not None)
        return cls(boundary_of(content_type), fields)

    def encode(self) -> bytes:
        delimiter = b"--" + self.boundary.encode("latin-1")
        out = bytearray()
        for name, value in self.fields:
            out += delimiter + b"\r\n"
            if isinstance(value, UploadedFile):
                out += value.raw_part or _file_part(name, value)
            else:
                text = value if isinstance(value, str) else str(value)
                if delimiter in text.encode():
                    raise MultipartError(f"field {name!r} contains the boundary")
                out += b'Content-Disposition: form-data; name="%s"\r\n\r\n' % _quote(name)
                out += text.encode()
            out += b"\r\n"
        out += delimiter + b"--\r\n"
        return bytes(out)


def _quote(value: str) -> bytes:
    return value.replace("\\", "\\\\").replace('"', '\\"').encode()


def _file_part(name: str, upload: UploadedFile) -> bytes:
    head = b'Content-Disposition: form-data; name="%s"; filename="%s"\r\nContent-Type: %s\r\n\r\n' % (
        _quote(name),
        _quote(upload.filename),
        upload.content_type.encode("latin-1"),
    )
    return head + upload.content
