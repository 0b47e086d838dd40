#!/usr/bin/env python3
"""Writes the hand-made seeds of every fuzz target into fuzz/corpus/<target>/seed-*.

Run from anywhere: `python3 fuzz/make_seeds.py`. The seeds are committed; the fuzzer's own
finds are merged into the same directories with `cargo fuzz cmin` (see fuzz/README.md).
The input formats are documented on each harness in src/fuzzing.rs.
"""

import os

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def form(body):
    return body.encode()


def chunk(*parts, ext=b"", trailer=b""):
    out = b""
    for p in parts:
        out += b"%x" % len(p) + ext + b"\r\n" + p + b"\r\n"
    return out + b"0\r\n" + trailer + b"\r\n"


XML = [
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?><messages><message id="mo-1" to="sms://5550001" from="sms://5550002" when="2010-01-01T23:18:53Z"><text>hello &amp; bye</text></message></messages>',
    """<messages>
  <message id="24c2" from="sms://838383" to="twitter://foo" when="2010-01-01T23:18:53Z">
    <subject>Subject</subject>
    <body>Body</body>
    <property name="custom-property" value="foo"/>
    <property name="another-property" value="123"/>
  </message>
</messages>""",
    "<messages/>",
    "\ufeff<?xml version='1.0'?>\n<!-- c --><?app x?>\n<messages>\n  <!-- c -->\n</messages>\n",
    '<messages><message when="2010-01-02T01:18:53+02:00"/><message id="" when=""/></messages>',
    "<messages><message><body>a<![CDATA[<b>&amp;</b>]]>&lt;c&gt;&#13;\r\n&#x2713;&#128512;</body></message></messages>",
    '<messages><message id="a&amp;b&lt;&#34;" from="&#x9;x&#10;" to="t\tu"><property name="" value=""/><property name="n" value="v"> </property></message></messages>',
    "<messages><message><subject>s</subject><text>t</text></message><message id='2'><body/></message></messages>",
    '<messages><message when="0000-01-01T00:00:00Z"/><message when="9999-12-31T23:59:59Z"/></messages>',
]

JSON = [
    '[{"id":"24c2","from":"sms://838383","to":"twitter://foo","when":"2010-01-01T23:18:53Z","subject":"Subject","body":"Body","custom-property":"foo","another-property":"123"}]',
    "[]",
    '[{"id":null,"from":null,"to":null,"when":null,"subject":null,"body":null}]',
    '[{"id":"","when":"","subject":""},{"when":"2010-01-02T01:18:53+02:00"}]',
    '[{"n":123,"f":-1.50e3,"t":true,"x":false,"z":0,"tag":["a","b"],"mix":[1,"two",true,null]}]',
    '[{"tag":"a","x":"1","tag":["b","c"],"Body":"p","body":"b"}]',
    '[{"k\\u0065y":"v\\"","\\u0062ody":"a\\"b\\\\c\\n\\t\\r\\u00e9\\ud83d\\ude00\\/"}]',
    '[{"subject":"h\u00e9llo \u2713","body":"\u65e5\u672c\u8a9e \U0001f600","\u00e9":"\u00df"}]',
    '[{"when":"0000-01-01T00:00:00Z"},{"when":"9999-12-31T23:59:59Z"}]',
]

DATES = [
    "2010-01-01T23:18:53Z", "2010-01-01t23:18:53z", "2010-01-01 23:18:53Z",
    "2010-01-01T23:18:53", "2010-01-01T23:18:53.123Z", "2010-01-01T23:18:53,5Z",
    "2010-01-02T01:18:53+02:00", "2010-01-02T01:18:53+0200", "2010-01-02T01:18:53+02",
    "2010-01-01T18:48:53.25-0430", "2010-01-01T23:18Z", "2016-12-31T23:59:60Z",
    "2000-02-29T00:00:00Z", "1900-02-28T23:59:59-23:59", "0000-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z", "2010-13-01T00:00:00Z", "2010-01-01T00:00:00+24:00",
]

HEADS = [
    "GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
    "HEAD /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    "GET /pull?name=a%20b&channel=c HTTP/1.1\r\nHead: less\r\nConnection: close\r\n\r\n",
    "GET http://example.com/health?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n",
    "OPTIONS * HTTP/1.1\r\nOrigin: https://a.example\r\nAccess-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: content-type\r\n\r\n",
    "POST /qst/q HTTP/1.1\r\nHost: t\r\nContent-Type: text/xml; charset=utf-8\r\nExpect: 100-continue\r\nContent-Length: 5000\r\nAuthorization: Basic dTpw\r\n\r\n",
    "POST /push HTTP/1.0\r\nConnection: keep-alive, Upgrade\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    "GET /qst/q HTTP/1.1\r\nIf-None-Match: W/\"m-3\"\r\n\r\n",
    "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    "POST /push HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "GET /health HTTP/9.9\r\n\r\n",
    "GET health HTTP/1.1\r\n\r\n",
    "GET /health HTTP/1.1\r\nX-Pad: " + "a" * 300 + "\r\n\r\n",
]

FORMS = [
    "name=bob&message=hi%21&empty=&flag",
    "a%20b+c", "100%", "%zz%4", "%e2%9c%93", "a+b%2Fc",
    "method=put&channel=w&message=m0x1&callback=cb0x1",
    "=&&==&%3D=%26",
]

# The machine harness: a control byte, then operations (see `fuzzing::machine`).
SEND, READ, TIME, HANGUP, PUBLISH, FAIL, SHUTDOWN, SWEEP, SPURIOUS = 0, 2, 3, 4, 5, 6, 7, 8, 9


def send(c, data, piece=255):
    if isinstance(data, str):
        data = data.encode()
    out = b""
    for i in range(0, len(data), piece):
        p = data[i:i + piece]
        out += bytes([SEND | c << 4, len(p)]) + p
    return out


def op(kind, c=0, arg=None):
    return bytes([kind | c << 4]) + (bytes([arg]) if arg is not None else b"")


def post(path, body, ctype="application/x-www-form-urlencoded", extra=""):
    if isinstance(body, str):
        body = body.encode()
    head = "POST %s HTTP/1.1\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n" % (
        path, ctype, len(body), extra)
    return head.encode() + body


def post_chunked(path, body, ctype="application/x-www-form-urlencoded"):
    if isinstance(body, str):
        body = body.encode()
    half = len(body) // 2
    head = "POST %s HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Type: %s\r\n\r\n" % (path, ctype)
    return head.encode() + chunk(body[:half], body[half:], ext=b";x=1")


def GET(target):
    return b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % target.encode()

MACHINE = {
    "health": bytes([0]) + send(0, GET("/health") + b"HEAD /health HTTP/1.1\r\n\r\n" + GET("/metrics"))
    + op(READ, 0, 255),
    "comet-sync-put": bytes([0]) + send(0, GET("/comet?method=sync&channel=w&callback=cb")
    + post("/comet", "method=put&channel=w&message=hello&callback=cb"), piece=7)
    + op(READ, 0, 64) + op(READ, 0, 255),
    "comet-longpoll": bytes([1]) + send(0, GET("/comet?method=get&channel=w&time=0&callback=cb"))
    + op(TIME, 0, 20) + send(1, post_chunked("/comet", "method=put&channel=w&message=m&callback=x"))
    + op(READ, 0, 255) + op(READ, 1, 255) + op(TIME, 0, 100),
    "talk-stream": bytes([2]) + send(0, "GET /pull?name=s0&channel=t HTTP/1.1\r\nHead: less\r\n\r\n")
    + send(1, GET("/push?channel=t&name=p&message=one")) + op(READ, 0, 8)
    + send(2, "POST /push HTTP/1.1\r\nHead: less\r\n\r\nname=raw&message=unframed")
    + op(TIME, 0, 60) + op(PUBLISH, 0, 1) + op(READ, 0, 255)
    + send(2, "GET /pull?name=s0&channel=t HTTP/1.1\r\n\r\n") + op(READ, 2, 255),
    "talk-coalesce": bytes([1 | 8 | 32]) + send(0, GET("/pull?name=c&channel=t"))
    + op(PUBLISH, 0, 1) + op(PUBLISH, 0, 1) + op(TIME, 0, 5) + op(READ, 0, 255),
    "qst-xml": bytes([1]) + send(0, post("/qst/q", XML[1], "text/xml"))
    + send(1, GET("/qst/q?max=5")) + op(READ, 0, 255) + op(READ, 1, 255)
    + send(1, "GET /qst/q?long-polling=true HTTP/1.1\r\nIf-None-Match: \"24c2\"\r\n\r\n")
    + op(TIME, 0, 100) + op(READ, 1, 255),
    "qst-json": bytes([64]) + send(0, post("/qst/q", JSON[0], "application/json")
    + b"HEAD /qst/q HTTP/1.1\r\n\r\n" + GET("/qst/acme/outgoing") + GET("/acme/qst/setaddress?address=sms://1")),
    "expect-continue": bytes([0]) + send(0, "POST /comet?method=put&message=x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n")
    + op(READ, 0, 255) + send(0, "hi") + op(READ, 0, 255),
    "faults-small": bytes([4]) + send(0, b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n" + GET("/health"))
    + op(READ, 0, 255) + op(FAIL, 0) + op(FAIL, 0)
    + send(0, "GET /health HTTP/1.1\r\nX: " + "a" * 600 + "\r\n\r\n") + op(READ, 0, 255),
    "pipeline-backpressure": bytes([4 | 1]) + send(0, GET("/health") * 40) + op(READ, 0, 2)
    + op(SPURIOUS, 0) + op(READ, 0, 255) + op(HANGUP, 0) + op(READ, 0, 255),
    "restricted-shutdown": bytes([16 | 2]) + send(0, GET("/comet?method=sync") + GET("/health"))
    + send(1, GET("/comet?method=get&channel=w&time=0")) + send(2, "GET /pull?name=z&channel=t HTTP/1.1\r\n\r\n")
    + op(SWEEP) + op(SHUTDOWN) + op(READ, 0, 255) + op(READ, 1, 255) + op(READ, 2, 255),
    "chunked-body-trickle": bytes([0]) + send(0, post_chunked("/comet", "method=put&channel=c&message=abcdefghij"), piece=3)
    + op(TIME, 0, 30) + op(READ, 0, 255),
    "header-timeout": bytes([0]) + send(0, "GET /hea") + op(TIME, 0, 60) + op(FAIL, 0) + op(FAIL, 0)
    + send(0, GET("/health")) + op(TIME, 0, 200) + op(READ, 0, 255),
}


def ws(opcode, payload=b"", fin=True, key=b"\x37\xfa\x21\x3d", length=None):
    """A masked client frame (RFC 6455 5.2); `length` forces the 126/127 forms."""
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    form = length or (7 if n <= 125 else 16 if n < 65536 else 64)
    if form == 7:
        head += bytes([0x80 | n])
    elif form == 16:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


HANDSHAKE = (
    b"Upgrade: websocket\nConnection: keep-alive, Upgrade\nSec-WebSocket-Version: 13\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\nSec-WebSocket-Protocol: foo, ws+meta.nchan\n"
)

# Control byte: bits 6-7 the limits (0: 16/40 bytes, 1: 125/300, 2: 4096/8192, 3: 1 MiB),
# bits 0-3 how many piece lengths follow.
WEBSOCKET = {
    "hello": bytes([0x82, 3, 1]) + bytes.fromhex("818537fa213d7f9f4d5158"),
    "fragments-ping": bytes([0x83, 2, 5, 7]) + ws(1, b"Hel", fin=False) + ws(9, b"ping")
    + ws(0, b"l", fin=False) + ws(10) + ws(0, "o \u20ac\U0001f600".encode()) + ws(2, b"\x00\x01"),
    "close": bytes([0x40]) + ws(1, b"a") + ws(8, b"\x03\xe8bye") + ws(1, b"after"),
    "close-bad-code": bytes([0x40]) + ws(8, b"\x03\xed"),
    "close-empty": bytes([0x40]) + ws(8),
    "lengths": bytes([0xC0]) + ws(2, b"x" * 200) + ws(1, b"hi", length=16) + ws(1, b"hi", length=64)
    + ws(2, b"y" * 70000),
    "limits": bytes([0x00]) + ws(1, b"a" * 16) + ws(1, b"b" * 10, fin=False) + ws(0, b"c" * 10, fin=False)
    + ws(0, b"d" * 10, fin=False) + ws(0, b"e" * 10),
    "utf8-straddle": bytes([0x41, 1]) + ws(1, b"\xe2", fin=False) + ws(0, b"\x82", fin=False) + ws(0, b"\xac"),
    "utf8-bad": bytes([0x40]) + ws(1, b"ok", fin=False) + ws(0, b"\xc3\x28"),
    "unmasked": bytes([0x40]) + b"\x81\x05hello",
    "rsv": bytes([0x40]) + b"\xc1\x80\x00\x00\x00\x00",
    "big-ping": bytes([0x40]) + ws(9, b"p" * 126),
    "continuation-first": bytes([0x40]) + ws(0, b"x"),
    "handshake": bytes([0x40]) + HANDSHAKE,
}


def main():
    for i, h in enumerate(HEADS):
        write("http_head", "%02d" % i, h)
    bodies = [
        chunk(b"Wiki", b"pedia", ext=b";ext=1", trailer=b"X-Trailer: 1\r\n") + b"NEXT",
        chunk(b"a" * 20, b"b" * 300),
        chunk(),
        b"1\r\na\r\n" * 20 + b"0\r\n\r\n",
        b"zz\r\n",
        b"2\r\nabX\r\n",
        b"fffffffffffffffffff\r\n",
    ]
    for i, b in enumerate(bodies):
        # Control: the largest limit, three cuts.
        write("chunked", "%02d" % i, bytes([0xC3, 3, 9, 0]) + b)
        write("chunked", "%02d-small" % i, bytes([0x01, 1]) + b)
    for i, f in enumerate(FORMS):
        write("form", "%02d" % i, f)
    for i, x in enumerate(XML):
        write("qst_xml", "%02d" % i, x)
    for i, j in enumerate(JSON):
        write("qst_json", "%02d" % i, j)
    for i, d in enumerate(DATES):
        write("datetime", "%02d" % i, d)
    for name, data in MACHINE.items():
        write("machine", name, data)
    for name, data in WEBSOCKET.items():
        write("websocket", name, data)


if __name__ == "__main__":
    main()
