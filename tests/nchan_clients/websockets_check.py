"""nchan's WebSocket subscriber and publisher (NCHAN.md 3.5, 6.2) through a WebSocket client
nobody here wrote: the `websockets` library (PyPI). Run by tests/nchan_websocket_clients.rs
against two tidings servers: `--port` with the defaults and `--timeout-port` with
`--nchan-subscriber-timeout 1`. The library masks every client frame; fragments are sent by
giving `send` a list. Prints one `ok …` line per check and `OK` at the end; exits non-zero
on the first failure.
"""

import argparse
import asyncio
import http.client
import json
import sys
import urllib.parse

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

ARGS = None


def request(method, path, body=b"", headers=None, port=None):
    """One HTTP request to tidings (http.client adds no Content-Type of its own);
    returns (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port or ARGS.port, timeout=10)
    try:
        conn.request(method, path, body=body if method in ("POST", "PUT") else None,
                     headers=headers or {})
        r = conn.getresponse()
        return r.status, r.headers, r.read()
    finally:
        conn.close()


def publish(channel, body, content_type=None):
    """POST /pub/{channel}; returns the new message id."""
    headers = {"Content-Type": content_type} if content_type else {}
    status, _, info = request("POST", f"/pub/{channel}", body, headers)
    assert status in (201, 202), (status, info)
    return info.decode().rsplit("last message id: ", 1)[1]


def ws_url(path, port=None):
    return f"ws://127.0.0.1:{port or ARGS.port}{path}"


def ok(line):
    print("ok " + line, flush=True)


async def expect_close(ws, code, reason):
    """The server closes `ws` with this code and reason before sending any frame."""
    try:
        frame = await asyncio.wait_for(ws.recv(), 5)
    except ConnectionClosed as exc:
        rcvd = exc.rcvd
        assert rcvd is not None, f"no close frame from the server: {exc!r}"
        assert (rcvd.code, rcvd.reason) == (code, reason), (rcvd.code, rcvd.reason)
        return
    raise AssertionError(f"a frame instead of close {code}: {frame!r}")


async def plain_frames():
    async with connect(ws_url("/sub/plain"), ping_interval=None) as ws:
        assert ws.subprotocol is None, ws.subprotocol
        publish("plain", b"hello", "text/plain")
        assert await ws.recv() == "hello"
        publish("plain", b"\x00\x01\xff", "application/octet-stream")
        got = await ws.recv()
        assert got == b"\x00\x01\xff", got
        publish("plain", b"")
        assert await ws.recv() == ""
        publish("plain", "multi\nline ✓".encode())
        assert await ws.recv() == "multi\nline ✓"
    ok("plain frames: text, binary for application/octet-stream, empty, UTF-8")


async def meta_frames():
    async with connect(ws_url("/sub/meta"), subprotocols=["ws+meta.nchan"],
                       ping_interval=None) as ws:
        assert ws.subprotocol == "ws+meta.nchan", ws.subprotocol
        a = publish("meta", b"hello")
        got = await ws.recv()
        assert got == f"id: {a}\n\nhello", got
        b = publish("meta", b"\x00\x01", "application/octet-stream")
        got = await ws.recv()
        want = f"id: {b}\ncontent-type: application/octet-stream\n\n".encode() + b"\x00\x01"
        assert got == want, got
        c = publish("meta", b"x", "text/plain; charset=utf-8")
        got = await ws.recv()
        assert got == f"id: {c}\ncontent-type: text/plain; charset=utf-8\n\nx", got
    ok("ws+meta.nchan frames: id, content-type, binary")
    # Deviation D1: offered after another subprotocol, it is still chosen; an offer of
    # only something else gets no Sec-WebSocket-Protocol at all (which the library accepts).
    async with connect(ws_url("/sub/meta"), subprotocols=["foo", "ws+meta.nchan"],
                       ping_interval=None) as ws:
        assert ws.subprotocol == "ws+meta.nchan", ws.subprotocol
        got = await ws.recv()
        assert got == f"id: {a}\n\nhello", got
    async with connect(ws_url("/sub/meta"), subprotocols=["foo"], ping_interval=None) as ws:
        assert ws.subprotocol is None, ws.subprotocol
        assert await ws.recv() == "hello"
    ok("subprotocol negotiation per D1")


async def resume():
    ids = [publish("resume", f"r{i}".encode()) for i in range(3)]
    cursor = urllib.parse.quote(ids[0], safe="")
    async with connect(ws_url(f"/sub/resume?last_event_id={cursor}"),
                       subprotocols=["ws+meta.nchan"], ping_interval=None) as ws:
        assert await ws.recv() == f"id: {ids[1]}\n\nr1"
        assert await ws.recv() == f"id: {ids[2]}\n\nr2"
    async with connect(ws_url("/sub/resume"), additional_headers={"Last-Event-ID": ids[1]},
                       ping_interval=None) as ws:
        assert await ws.recv() == "r2"
    ok("resume by last_event_id and Last-Event-ID")


async def ping_pong():
    async with connect(ws_url("/sub/ping"), ping_interval=None) as ws:
        waiter = await ws.ping(b"are you there")
        latency = await asyncio.wait_for(waiter, 5)
        assert latency >= 0
        waiter = await ws.ping(b"")
        await asyncio.wait_for(waiter, 5)
    ok("ping answered with pong")


async def closes():
    # A client close is echoed with its code.
    ws = await connect(ws_url("/sub/close"), ping_interval=None)
    await ws.close(4000, "bye now")
    assert ws.close_code == 4000, ws.close_code
    ok("client close echoed")
    # DELETE: 1001 "410 Gone".
    publish("close", b"x")
    async with connect(ws_url("/sub/close"), ping_interval=None) as ws:
        assert await ws.recv() == "x"
        status, _, _ = request("DELETE", "/pub/close")
        assert status == 200, status
        await expect_close(ws, 1001, "410 Gone")
    ok("DELETE closes 1001 '410 Gone'")
    # A subscriber that publishes: 1008 "Publishing not allowed.".
    async with connect(ws_url("/sub/close"), ping_interval=None) as ws:
        await ws.send("may I?")
        await expect_close(ws, 1008, "Publishing not allowed.")
    ok("publishing on /sub/ closes 1008")
    # --nchan-subscriber-timeout: 1000 "408 408 Request Timeout".
    async with connect(ws_url("/sub/slow", ARGS.timeout_port), ping_interval=None) as ws:
        await expect_close(ws, 1000, "408 408 Request Timeout")
    ok("subscriber timeout closes 1000 '408 408 Request Timeout'")


async def publisher():
    headers = {"Content-Type": "text/x-ws", "Accept": "text/json"}
    async with connect(ws_url("/pub/wspub"), additional_headers=headers,
                       ping_interval=None) as pub:
        await pub.send("first")
        info = json.loads(await pub.recv())
        assert info["messages"] == 1 and info["subscribers"] == 0, info
        first = info["last_message_id"]
        # Fragmented (a text message in two frames), masked like every client frame.
        await pub.send(["frag", "mented"])
        info = json.loads(await pub.recv())
        assert info["messages"] == 2, info
        second = info["last_message_id"]
        await pub.send(b"\x00\x02")
        info = json.loads(await pub.recv())
        third = info["last_message_id"]
    status, h, body = request("GET", "/sub/wspub")
    assert (status, body, h["Content-Type"]) == (200, b"first", "text/x-ws"), (status, body)
    status, h, body = request("GET", "/sub/wspub", headers={"Last-Event-ID": first})
    assert (status, body, h["Content-Type"]) == (200, b"fragmented", "text/x-ws"), body
    status, h, body = request("GET", "/sub/wspub", headers={"Last-Event-ID": second})
    assert (body, h["Content-Type"]) == (b"\x00\x02", "application/octet-stream"), body
    assert third
    ok("publisher: info per message in the Accept format, fragmented and binary messages")


async def main():
    checks = [plain_frames, meta_frames, resume, ping_pong, closes, publisher]
    for check in checks:
        await asyncio.wait_for(check(), 20)
    print("OK", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--timeout-port", type=int, required=True)
    ARGS = parser.parse_args()
    try:
        asyncio.run(main())
    except Exception as e:  # noqa: BLE001 - any failure is reported and fails the run
        import traceback

        traceback.print_exc()
        print(f"FAILED {e!r}", flush=True)
        sys.exit(1)
