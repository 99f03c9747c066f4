"""Write a description into an image file's metadata, leaving its pixel data untouched.

PNG: an iTXt `Description` chunk and XMP (iTXt `XML:com.adobe.xmp`), inserted before
the image data. JPEG: EXIF `ImageDescription` (other EXIF tags kept, through Pillow's
`Image.Exif`) and an XMP APP1 segment; everything from the start-of-scan marker on,
the entropy-coded data included, is copied byte for byte. WebP: an `XMP ` chunk
(with a VP8X header added to a simple file).

These are hand-written container edits rather than a Pillow save because a save
re-encodes the pixels (lossily for JPEG and WebP); the containers are simple chunk
or segment lists, and each edit here only inserts or replaces metadata records.
"""

from __future__ import annotations

import os
import struct
import tempfile
import zlib
from pathlib import Path
from xml.sax.saxutils import escape

from curator.errors import UsageError

XMP_JPEG_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
XMP_PNG_KEY = b"XML:com.adobe.xmp"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IMAGE_DESCRIPTION = 0x010E


def xmp_packet(description: str) -> bytes:
    text = escape(description)
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        '  <rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">\n'
        "   <dc:description><rdf:Alt>"
        f'<rdf:li xml:lang="x-default">{text}</rdf:li>'
        "</rdf:Alt></dc:description>\n"
        "  </rdf:Description>\n"
        " </rdf:RDF>\n"
        "</x:xmpmeta>\n"
        '<?xpacket end="w"?>'
    ).encode()


# --- PNG ------------------------------------------------------------------------------


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    if not data.startswith(PNG_SIGNATURE):
        raise UsageError("not a PNG file")
    chunks, pos = [], len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        chunks.append((kind, data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
        if kind == b"IEND":
            break
    return chunks


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _itxt(keyword: bytes, text: bytes) -> bytes:
    # keyword, no compression, no language tag, no translated keyword
    return keyword + b"\x00\x00\x00" + b"\x00" + b"\x00" + text


def write_png(data: bytes, description: str) -> bytes:
    keys = (b"Description", XMP_PNG_KEY)
    out = [PNG_SIGNATURE]
    inserted = False
    for kind, body in _png_chunks(data):
        if kind in (b"iTXt", b"tEXt", b"zTXt") and body.split(b"\x00", 1)[0] in keys:
            continue  # replaced below
        if kind == b"IDAT" and not inserted:
            out.append(_png_chunk(b"iTXt", _itxt(b"Description", description.encode("utf-8"))))
            out.append(_png_chunk(b"iTXt", _itxt(XMP_PNG_KEY, xmp_packet(description))))
            inserted = True
        out.append(_png_chunk(kind, body))
    if not inserted:
        raise UsageError("PNG without image data")
    return b"".join(out)


# --- JPEG -----------------------------------------------------------------------------


def _jpeg_segments(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """(marker, payload) for each segment before the scan, and the rest of the file."""
    if not data.startswith(b"\xff\xd8"):
        raise UsageError("not a JPEG file")
    segments, pos = [], 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise UsageError("damaged JPEG: marker expected")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xDA:  # start of scan: the rest is copied as it is
            return segments, data[pos:]
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        segments.append((marker, data[pos + 4 : pos + 2 + length]))
        pos += 2 + length
    raise UsageError("damaged JPEG: no image data")


def _segment(marker: int, payload: bytes) -> bytes:
    if len(payload) + 2 > 0xFFFF:
        raise UsageError("description too long for a JPEG metadata segment")
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def _exif_payload(old: bytes | None, description: str) -> bytes:
    from PIL import Image

    exif = Image.Exif()
    if old is not None:
        exif.load(old)
    # EXIF ASCII holds no UTF-8; the XMP packet carries the exact text.
    exif[IMAGE_DESCRIPTION] = description.encode("ascii", "replace").decode("ascii")
    return exif.tobytes()


def _merge_xmp(old: bytes | None, description: str) -> bytes:
    """The XMP packet with dc:description set; other properties of an existing one kept."""
    fresh = xmp_packet(description)
    if old is None:
        return fresh
    text = old.decode("utf-8", "replace")
    start, end = text.find("<dc:description"), text.find("</dc:description>")
    new_value = fresh.decode("utf-8")
    value = new_value[new_value.find("<dc:description") : new_value.find("</dc:description>")]
    if 0 <= start < end:
        return (text[:start] + value + text[end:]).encode("utf-8")
    close = text.find("</rdf:RDF>")
    if close < 0:
        return fresh
    block = (
        '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">'
        f"{value}</dc:description></rdf:Description>"
    )
    return (text[:close] + block + text[close:]).encode("utf-8")


def write_jpeg(data: bytes, description: str) -> bytes:
    segments, rest = _jpeg_segments(data)
    exif_old = next((p for m, p in segments if m == 0xE1 and p.startswith(b"Exif\x00\x00")), None)
    xmp_old = next(
        (
            p[len(XMP_JPEG_HEADER) :]
            for m, p in segments
            if m == 0xE1 and p.startswith(XMP_JPEG_HEADER)
        ),
        None,
    )
    kept = [
        (m, p)
        for m, p in segments
        if not (m == 0xE1 and (p.startswith(b"Exif\x00\x00") or p.startswith(XMP_JPEG_HEADER)))
    ]
    exif = _segment(0xE1, _exif_payload(exif_old, description))
    xmp = _segment(0xE1, XMP_JPEG_HEADER + _merge_xmp(xmp_old, description))
    # EXIF right after a JFIF APP0 (or first), XMP after it, as cameras and editors write.
    at = 1 if kept and kept[0][0] == 0xE0 else 0
    out = [b"\xff\xd8"]
    out += [_segment(m, p) for m, p in kept[:at]]
    out += [exif, xmp]
    out += [_segment(m, p) for m, p in kept[at:]]
    return b"".join(out) + rest


# --- WebP -----------------------------------------------------------------------------


def _riff_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise UsageError("not a WebP file")
    chunks, pos = [], 12
    while pos + 8 <= len(data):
        kind = data[pos : pos + 4]
        (size,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        chunks.append((kind, data[pos + 8 : pos + 8 + size]))
        pos += 8 + size + (size & 1)
    return chunks


def _riff_chunk(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) & 1 else b"")


def _vp8x_for(chunks: list[tuple[bytes, bytes]], size: tuple[int, int]) -> bytes:
    alpha = any(k == b"ALPH" for k, _ in chunks)
    for kind, body in chunks:
        if kind == b"VP8L" and len(body) >= 5:
            bits = int.from_bytes(body[1:5], "little")
            alpha = alpha or bool((bits >> 28) & 1)
    flags = 0x10 if alpha else 0
    width, height = size
    return (
        bytes([flags, 0, 0, 0])
        + (width - 1).to_bytes(3, "little")
        + (height - 1).to_bytes(3, "little")
    )


def write_webp(data: bytes, description: str, size: tuple[int, int]) -> bytes:
    chunks = [(k, b) for k, b in _riff_chunks(data) if k != b"XMP "]
    if chunks and chunks[0][0] == b"VP8X":
        head = bytearray(chunks[0][1])
        head[0] |= 0x04  # XMP present
        chunks[0] = (b"VP8X", bytes(head))
    else:
        vp8x = bytearray(_vp8x_for(chunks, size))
        vp8x[0] |= 0x04
        chunks.insert(0, (b"VP8X", bytes(vp8x)))
    chunks.append((b"XMP ", xmp_packet(description)))
    body = b"WEBP" + b"".join(_riff_chunk(k, b) for k, b in chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


# --- files ----------------------------------------------------------------------------


def with_description(path: Path, description: str) -> bytes:
    """The bytes of `path` with the description written into its metadata."""
    from PIL import Image

    data = Path(path).read_bytes()
    try:
        with Image.open(path) as img:
            fmt, size = img.format, img.size
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the image ({exc})") from exc
    if fmt == "PNG":
        return write_png(data, description)
    if fmt == "JPEG":
        return write_jpeg(data, description)
    if fmt == "WEBP":
        return write_webp(data, description, size)
    raise UsageError(
        f"{path}: writing descriptions into {fmt} files is not supported (PNG, JPEG, WebP)"
    )


def copy_target(path: Path, output_dir: Path | None) -> Path:
    """Where a described copy goes: OUTPUT_DIR/NAME, else NAME.described.EXT beside it."""
    path = Path(path)
    if output_dir is not None:
        return Path(output_dir) / path.name
    return path.with_name(f"{path.stem}.described{path.suffix}")


def write_description(
    path: Path, description: str, *, in_place: bool = False, output_dir: Path | None = None
) -> Path:
    """Write a copy of the image (or, only when asked, the image itself) atomically."""
    path = Path(path)
    data = with_description(path, description)
    target = path if in_place else copy_target(path, output_dir)
    if not in_place and target.resolve() == path.resolve():
        raise UsageError(f"{target} is the image itself; pass --in-place to change it")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        if in_place:
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
