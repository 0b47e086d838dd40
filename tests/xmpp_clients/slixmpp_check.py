"""Drives tidings with slixmpp, an XMPP client library nobody here wrote.

Two clients (alice, bob) connect to the XMPP listener, authenticate with SCRAM-SHA-1, bind,
start their sessions, ping the server (XEP-0199), ask it for disco#info (XEP-0030), fetch
their roster, send urn:M IQs, and alice sends bob a chat message. Prints one line per check
and `OK` at the end; exits non-zero on the first failure. Every wait is bounded.

    python3 slixmpp_check.py --port PORT [--domain localhost]
"""

import argparse
import asyncio
import base64
import json
import sys

import slixmpp
from slixmpp.xmlstream import ET

TIMEOUT = 20


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        # No TLS is offered yet (PROTOCOLS.md 4.1): allow SCRAM over plain TCP on loopback.
        super().__init__(
            jid,
            password,
            plugin_config={"feature_mechanisms": {"unencrypted_scram": True}},
        )
        self.enable_starttls = False
        self.enable_direct_tls = False
        self.enable_plaintext = True
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0060")
        self.register_plugin("xep_0199")
        self.events = asyncio.Queue()
        self.add_event_handler("pubsub_publish", self.on_event)
        self.started = asyncio.get_event_loop().create_future()
        self.inbox = asyncio.Queue()
        self.mechanism = None
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("failed_auth", self.on_failed)
        self.add_event_handler("auth_success", self.on_auth)

    async def on_start(self, _event):
        if not self.started.done():
            self.started.set_result(True)

    def on_auth(self, _event):
        self.mechanism = getattr(self.plugin["feature_mechanisms"], "mech", None)

    def on_failed(self, _event):
        if not self.started.done():
            self.started.set_exception(RuntimeError("authentication failed"))

    def on_message(self, msg):
        if msg["body"]:
            self.inbox.put_nowait(msg)

    def on_event(self, msg):
        self.events.put_nowait(msg)


def check(ok, what):
    if not ok:
        print(f"FAIL {what}", flush=True)
        sys.exit(1)
    print(f"ok {what}", flush=True)


async def connect(jid, password, port):
    c = Client(jid, password)
    c.connect("127.0.0.1", port)
    await asyncio.wait_for(c.started, TIMEOUT)
    return c


async def main(port, domain, http_port):
    alice = await connect(f"alice@{domain}/laptop", "wonderland", port)
    check(True, f"alice authenticated and bound as {alice.boundjid.full}")
    mech = alice.plugin["feature_mechanisms"].mech
    check(mech is not None and mech.name == "SCRAM-SHA-1", f"mechanism {getattr(mech, 'name', None)}")
    bob = await connect(f"bob@{domain}/phone", "builder", port)
    check(bob.boundjid.full == f"bob@{domain}/phone", f"bob bound as {bob.boundjid.full}")

    rtt = await asyncio.wait_for(alice.plugin["xep_0199"].ping(jid=domain, timeout=TIMEOUT), TIMEOUT)
    check(rtt is not None and rtt >= 0, "ping answered")

    info = await asyncio.wait_for(alice.plugin["xep_0030"].get_info(jid=domain), TIMEOUT)
    features = info["disco_info"]["features"]
    check("urn:M" in features and "urn:xmpp:ping" in features, f"disco#info features {sorted(features)}")

    roster = await asyncio.wait_for(alice.get_roster(), TIMEOUT)
    check(roster is not None, "roster fetched (empty)")

    # A urn:M query, as the reference's demo-client sends it: get-item '/' (the root Site).
    iq = alice.make_iq_get(ito=None)
    item = ET.Element("{urn:M}item")
    item.text = base64.b64encode(b"/").decode()
    iq.append(item)
    reply = await asyncio.wait_for(iq.send(timeout=TIMEOUT), TIMEOUT)
    payload = reply.xml.find("{urn:M}item")
    data = json.loads(base64.b64decode(payload.text))
    check(isinstance(data, list) and data and data[0].get("_kind") == "Site", f"urn:M get_item '/' answered {data}")

    # A failing command: a stanza error with the reference's condition.
    iq = alice.make_iq_get(ito=None)
    item = ET.Element("{urn:M}item")
    item.text = base64.b64encode(b"//[").decode()
    iq.append(item)
    try:
        await asyncio.wait_for(iq.send(timeout=TIMEOUT), TIMEOUT)
        check(False, "a bad path expression was answered as a result")
    except slixmpp.exceptions.IqError as e:
        check(e.iq["error"]["condition"] == "undefined-condition", f"urn:M bad expression: {e.iq['error']['condition']}")

    alice.send_message(mto=f"bob@{domain}", mbody="hello bob", mtype="chat")
    msg = await asyncio.wait_for(bob.inbox.get(), TIMEOUT)
    check(msg["body"] == "hello bob", f"bob got {msg['body']!r}")
    check(str(msg["from"]) == f"alice@{domain}/laptop", f"stamped from {msg['from']}")

    bob.send_message(mto=f"alice@{domain}/laptop", mbody="hi alice", mtype="chat")
    msg = await asyncio.wait_for(alice.inbox.get(), TIMEOUT)
    check(msg["body"] == "hi alice", f"alice got {msg['body']!r}")

    # PubSub (XEP-0060): bob subscribes to the hub channel "chat/news" with slixmpp's plugin;
    # a message published over HTTP (comet put) reaches him as an event.
    sub = await asyncio.wait_for(
        bob.plugin["xep_0060"].subscribe(domain, "chat/news", subscribee=bob.boundjid.bare),
        TIMEOUT,
    )
    check(sub["pubsub"]["subscription"]["subscription"] == "subscribed", "subscribed to chat/news")
    await asyncio.get_event_loop().run_in_executor(None, comet_put, http_port, "chat/news", "over http")
    event = await asyncio.wait_for(bob.events.get(), TIMEOUT)
    item = event["pubsub_event"]["items"]["item"]
    payload = ET.tostring(item.xml[0], encoding="unicode") if len(item.xml) else ""
    check("over http" in payload, f"event from http: {payload}")

    alice.disconnect()
    bob.disconnect()
    print("OK", flush=True)


def comet_put(port, channel, message):
    import urllib.parse
    import urllib.request

    query = urllib.parse.urlencode({"method": "put", "channel": channel, "message": message})
    # The credentials file guards chat/*: the publisher authenticates like any HTTP client.
    req = urllib.request.Request(f"http://127.0.0.1:{port}/comet?{query}")
    token = base64.b64encode(b"alice:wonderland").decode()
    req.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
        assert r.status == 200, r.status


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--domain", default="localhost")
    p.add_argument("--http-port", type=int, required=True)
    a = p.parse_args()
    try:
        asyncio.run(asyncio.wait_for(main(a.port, a.domain, a.http_port), 60))
    except Exception as e:  # noqa: BLE001 - report any failure as one line
        print(f"FAIL {type(e).__name__}: {e}", flush=True)
        sys.exit(1)
