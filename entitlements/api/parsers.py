"""The two ways a seal arrives: a ``multipart/form-data`` field ``seal``, or the SVG itself as
an ``image/svg+xml`` body. At most 1 MiB either way (the seal module refuses more, too)."""

from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser

from governance.errors import Invalid

MAX_SEAL_BYTES = 1024 * 1024


class SVGParser(BaseParser):
    media_type = "image/svg+xml"

    def parse(self, stream, media_type=None, parser_context=None):
        data = stream.read(MAX_SEAL_BYTES + 1) if stream is not None else b""
        if len(data) > MAX_SEAL_BYTES:
            raise ParseError(f"the seal is larger than {MAX_SEAL_BYTES} bytes")
        return {"seal": data}


def seal_upload(request) -> bytes:
    """The seal's bytes from either body form; 400 when there is none or it is too large."""
    data = request.data
    seal = data.get("seal") if hasattr(data, "get") else None
    if seal is None:
        raise Invalid("send the seal as multipart field 'seal' or as an image/svg+xml body", field="seal")
    if isinstance(seal, bytes):
        return seal
    if isinstance(seal, str):
        raw = seal.encode()
    else:
        if getattr(seal, "size", 0) > MAX_SEAL_BYTES:
            raise Invalid(f"the seal is larger than {MAX_SEAL_BYTES} bytes", field="seal", code="seal_unreadable")
        raw = seal.read(MAX_SEAL_BYTES + 1)
    if len(raw) > MAX_SEAL_BYTES:
        raise Invalid(f"the seal is larger than {MAX_SEAL_BYTES} bytes", field="seal", code="seal_unreadable")
    return raw
