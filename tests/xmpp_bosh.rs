//! BOSH (PROTOCOLS.md 4.5) over raw HTTP: session creation, `rid` order, repeats and the
//! window, the held request (released by a second one, or answered at `wait`),
//! `xmpp:restart`, `terminate`, unknown sessions, inactivity, CORS, the limit on sessions,
//! and the same session machine as TCP (SASL, bind, urn:M, PubSub, routing, stream errors).

#[path = "xmpp_support/mod.rs"]
mod xmpp_support;

use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use xmpp_support::*;

const NS: &str = "http://jabber.org/protocol/httpbind";
const PUBSUB: &str = "http://jabber.org/protocol/pubsub";

/// A `POST /http-bind` with this body.
fn bosh_request(body: &str) -> Vec<u8> {
    post("/http-bind", "text/xml; charset=utf-8", body.as_bytes())
}

/// Sends a request on a fresh connection and returns the connection, answer not read.
fn send(server: &TestServer, body: &str) -> Client {
    let mut c = server.connect();
    c.send(&bosh_request(body));
    c
}

/// Reads a BOSH answer: `200`, `text/xml; charset=utf-8`, and the body's text.
fn answer(c: &mut Client) -> String {
    let r = c.read_response();
    assert_eq!(r.status, 200, "{}", r.show());
    assert_eq!(
        r.header("Content-Type"),
        Some("text/xml; charset=utf-8"),
        "{}",
        r.show()
    );
    r.body_str().to_string()
}

fn roundtrip(server: &TestServer, body: &str) -> String {
    answer(&mut send(server, body))
}

/// The value of attribute `name` in `xml`'s first tag that has it.
fn attr(xml: &str, name: &str) -> String {
    let key = format!(" {name}='");
    let rest = xml
        .split(&key)
        .nth(1)
        .unwrap_or_else(|| panic!("no {name} in {xml}"));
    rest.split('\'').next().unwrap().to_string()
}

/// One client's session: its `sid` and the next `rid`.
struct Bosh {
    sid: String,
    rid: u64,
}

impl Bosh {
    /// The body of the next request, carrying `payload`, with extra attributes.
    fn body(&mut self, extra: &str, payload: &str) -> String {
        self.rid += 1;
        format!(
            "<body rid='{}' sid='{}'{extra} xmlns='{NS}'>{payload}</body>",
            self.rid, self.sid
        )
    }

    fn send(&mut self, server: &TestServer, payload: &str) -> Client {
        let body = self.body("", payload);
        send(server, &body)
    }

    fn roundtrip(&mut self, server: &TestServer, payload: &str) -> String {
        answer(&mut self.send(server, payload))
    }
}

/// Opens a session (`wait` seconds); returns it and the creation answer.
fn create(server: &TestServer, wait: u64) -> (Bosh, String) {
    let rid = 1000;
    let a = roundtrip(server, &format!("<body rid='{rid}' to='localhost' wait='{wait}' hold='1' ver='1.6' xml:lang='en' xmpp:version='1.0' xmlns='{NS}' xmlns:xmpp='urn:xmpp:xbosh'/>"));
    let sid = attr(&a, "sid");
    (Bosh { sid, rid }, a)
}

/// A session logged in as `user`/`secret` with PLAIN, restarted and bound to `resource`.
fn login(server: &TestServer, wait: u64, resource: &str) -> Bosh {
    let (mut b, _) = create(server, wait);
    let auth = B64.encode("\0user\0secret");
    assert_eq!(
        b.roundtrip(
            server,
            &format!("<auth xmlns='{SASL}' mechanism='PLAIN'>{auth}</auth>")
        ),
        format!("<body xmlns='{NS}' xmlns:stream='http://etherx.jabber.org/streams'><success xmlns='{SASL}'/></body>")
    );
    let body = b.body(" xmpp:restart='true' xmlns:xmpp='urn:xmpp:xbosh'", "");
    let features = roundtrip(server, &body);
    assert!(
        features.contains("<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/><session xmlns='urn:ietf:params:xml:ns:xmpp-session'><optional/></session></stream:features>"),
        "{features}"
    );
    let bound = b.roundtrip(server, &format!("<iq type='set' id='bind1' xmlns='jabber:client'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>"));
    assert!(
        bound.contains(&format!("<jid>user@localhost/{resource}</jid>")),
        "{bound}"
    );
    b
}

#[test]
fn a_session_is_created_with_its_parameters_and_features() {
    let server = start_with(|c| c.long_poll_timeout = Duration::from_secs(20));
    for path in ["/http-bind", "/bosh", "/bosh/http-bind"] {
        let body = format!("<body rid='42' to='localhost' wait='60' hold='1' ver='1.6' xml:lang='en' xmpp:version='1.0' xmlns='{NS}' xmlns:xmpp='urn:xmpp:xbosh'/>");
        let r = server.request(&post(path, "text/xml", body.as_bytes()));
        assert_eq!(r.status, 200, "{path}: {}", r.show());
        assert_eq!(r.header("Content-Type"), Some("text/xml; charset=utf-8"));
        assert_eq!(r.header("Access-Control-Allow-Origin"), Some("*"));
        let a = r.body_str();
        let (sid, authid) = (attr(a, "sid"), attr(a, "authid"));
        assert_eq!(sid.len(), 32, "an unguessable sid: {a}");
        assert!(sid.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(
            a,
            format!("<body sid='{sid}' wait='20' requests='2' hold='1' inactivity='60' polling='2' ver='1.6' from='localhost' authid='{authid}' xmpp:version='1.0' xmlns='{NS}' xmlns:xmpp='urn:xmpp:xbosh' xmlns:stream='http://etherx.jabber.org/streams'><stream:features><mechanisms xmlns='{SASL}'><mechanism>SCRAM-SHA-1</mechanism><mechanism>PLAIN</mechanism></mechanisms></stream:features></body>"),
            "wait is min(W, --long-poll-timeout)"
        );
    }
    assert_eq!(server.metric("tidings_bosh_sessions"), Some(3.0));
    // Two sessions never share a sid.
    let (a, _) = create(&server, 5);
    let (b, _) = create(&server, 5);
    assert_ne!(a.sid, b.sid);
}

#[test]
fn a_logged_in_session_runs_urn_m_and_ping() {
    let server = start();
    let mut b = login(&server, 5, "web");
    let query = B64.encode("/");
    let a = b.roundtrip(
        &server,
        &format!(
            "<iq type='get' id='q1' xmlns='jabber:client'><item xmlns='urn:M'>{query}</item></iq>"
        ),
    );
    let inner = a
        .split("<item xmlns='urn:M'>")
        .nth(1)
        .and_then(|s| s.split("</item>").next())
        .unwrap_or_else(|| panic!("no urn:M answer: {a}"));
    let json = String::from_utf8(B64.decode(inner).unwrap()).unwrap();
    assert!(
        json.starts_with("[{\"_key\": ") && json.contains("\"_path\": \"/\""),
        "{json}"
    );
    assert!(a.contains("<iq type='result' id='q1'>"), "{a}");
    let a = b.roundtrip(
        &server,
        "<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>",
    );
    assert_eq!(
        a,
        format!("<body xmlns='{NS}' xmlns:stream='http://etherx.jabber.org/streams'><iq type='result' id='p1'/></body>")
    );
}

#[test]
fn the_held_request_is_released_by_a_second_one_or_at_wait() {
    let server = start();
    let (mut b, _) = create(&server, 20);
    // Nothing to say: the request is held...
    let mut first = b.send(&server, "");
    first.expect_silence(Duration::from_millis(200));
    // A held BOSH request counts as a parked request.
    server.wait_parked(1);
    // ...until a second one arrives: the first is answered empty at once, the second held.
    let t0 = Instant::now();
    let mut second = b.send(&server, "");
    assert_eq!(answer(&mut first), format!("<body xmlns='{NS}'/>"));
    assert!(t0.elapsed() < Duration::from_secs(5));
    second.expect_silence(Duration::from_millis(200));

    // At `wait`, a held request is answered empty.
    let (mut short, created) = create(&server, 1);
    assert_eq!(attr(&created, "wait"), "1");
    let t0 = Instant::now();
    let mut held = short.send(&server, "");
    assert_eq!(answer(&mut held), format!("<body xmlns='{NS}'/>"));
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "held for wait=1: {took:?}"
    );
}

#[test]
fn requests_run_in_rid_order_whatever_order_they_arrive_in() {
    let server = start();
    let mut b = login(&server, 20, "order");
    let first = b.body(
        "",
        "<iq type='get' id='a'><ping xmlns='urn:xmpp:ping'/></iq>",
    );
    let second = b.body(
        "",
        "<iq type='get' id='b'><ping xmlns='urn:xmpp:ping'/></iq>",
    );
    // The later rid arrives first: it waits for the missing one.
    let mut late = send(&server, &second);
    late.expect_silence(Duration::from_millis(300));
    let mut early = send(&server, &first);
    // Both ran, in rid order; the answers go out on the oldest held request.
    assert_eq!(
        answer(&mut early),
        format!("<body xmlns='{NS}' xmlns:stream='http://etherx.jabber.org/streams'><iq type='result' id='a'/><iq type='result' id='b'/></body>")
    );
    late.expect_silence(Duration::from_millis(200));
}

#[test]
fn a_repeated_rid_gets_the_same_answer_and_one_outside_the_window_ends_the_session() {
    let server = start();
    let mut b = login(&server, 5, "replay");
    let body = b.body(
        "",
        "<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>",
    );
    let once = roundtrip(&server, &body);
    assert!(once.contains("<iq type='result' id='p'/>"), "{once}");
    assert_eq!(roundtrip(&server, &body), once, "the same bytes again");

    // A rid far ahead of the window.
    let far = format!("<body rid='{}' sid='{}' xmlns='{NS}'/>", b.rid + 10, b.sid);
    assert_eq!(
        roundtrip(&server, &far),
        format!("<body type='terminate' condition='item-not-found' xmlns='{NS}'/>")
    );
    server.wait_metric("tidings_bosh_sessions", 0.0);
    assert_eq!(
        b.roundtrip(&server, ""),
        format!("<body type='terminate' condition='item-not-found' xmlns='{NS}'/>"),
        "the session is gone"
    );
}

#[test]
fn an_unknown_sid_gets_item_not_found() {
    let server = start();
    assert_eq!(
        roundtrip(
            &server,
            &format!("<body rid='5' sid='0123456789abcdef0123456789abcdef' xmlns='{NS}'/>")
        ),
        format!("<body type='terminate' condition='item-not-found' xmlns='{NS}'/>")
    );
}

#[test]
fn terminate_ends_the_session_and_releases_what_is_held() {
    let server = start();
    let mut b = login(&server, 20, "bye");
    assert_eq!(server.metric("tidings_bosh_sessions"), Some(1.0));
    let mut held = b.send(&server, "");
    held.expect_silence(Duration::from_millis(200));
    let body = b.body(" type='terminate'", "<presence type='unavailable'/>");
    let bye = roundtrip(&server, &body);
    let held = answer(&mut held);
    // One of the two carries the plain terminate; both say the session ended.
    for a in [&bye, &held] {
        assert_eq!(a, &format!("<body type='terminate' xmlns='{NS}'/>"));
    }
    server.wait_metric("tidings_bosh_sessions", 0.0);
    assert!(b
        .roundtrip(&server, "")
        .contains("condition='item-not-found'"));
}

#[test]
fn a_session_with_no_request_for_its_inactivity_ends() {
    let server = start_with(|c| c.bosh_inactivity = Duration::from_secs(1));
    let (mut b, created) = create(&server, 5);
    assert_eq!(attr(&created, "inactivity"), "1");
    let t0 = Instant::now();
    server.wait_metric_within("tidings_bosh_sessions", 0.0, Duration::from_secs(5));
    assert!(t0.elapsed() >= Duration::from_millis(500));
    assert_eq!(server.metric("tidings_bosh_inactive_total"), Some(1.0));
    assert!(b
        .roundtrip(&server, "")
        .contains("condition='item-not-found'"));

    // A held request is activity: the session outlives its inactivity while one is held.
    let (mut held_session, _) = create(&server, 2);
    let mut held = held_session.send(&server, "");
    assert_eq!(answer(&mut held), format!("<body xmlns='{NS}'/>"));
    assert_eq!(server.metric("tidings_bosh_sessions"), Some(1.0));
}

#[test]
fn pubsub_events_and_routed_messages_reach_a_bosh_session() {
    let server = xmpp(|_| {});
    let mut b = login(&server, 20, "web");
    let sub = b.roundtrip(&server, &format!("<iq type='set' to='localhost' id='s1'><pubsub xmlns='{PUBSUB}'><subscribe node='news' jid='user@localhost/web'/></pubsub></iq>"));
    assert!(
        sub.contains("subscription='subscribed'/></pubsub></iq>"),
        "{sub}"
    );
    let mut held = b.send(&server, "");
    held.expect_silence(Duration::from_millis(100));
    assert_eq!(
        server
            .get("/push?channel=news&name=talker&message=hello%20web")
            .status,
        200
    );
    let ev = answer(&mut held);
    assert!(
        ev.starts_with(&format!("<body xmlns='{NS}' xmlns:stream='http://etherx.jabber.org/streams'><message from='localhost' to='user@localhost/web' id='")),
        "{ev}"
    );
    assert!(
        ev.contains(
            "<event xmlns='http://jabber.org/protocol/pubsub#event'><items node='news'><item id='"
        ) && ev.contains(" from='talker' ")
            && ev.ends_with(">hello web</message></item></items></event></message></body>"),
        "{ev}"
    );

    // A message from a TCP session to the BOSH session's JID.
    let mut held = b.send(&server, "");
    let mut tcp = session(&server, "user", "secret", "desk");
    tcp.send(b"<message to='user@localhost/web' type='chat'><body>hi web</body></message>");
    let got = answer(&mut held);
    assert!(
        got.contains("from='user@localhost/desk'")
            && got.contains("<body>hi web</body></message></body>"),
        "{got}"
    );
    // And back: a BOSH message reaches the TCP session. Its request has nothing to say and
    // is held, until the next one releases it.
    let mut quiet = b.send(
        &server,
        "<message to='user@localhost/desk' type='chat'><body>hi desk</body></message>",
    );
    let got = text(tcp.read_until(b"</message>", TIMEOUT));
    assert!(
        got.contains("from='user@localhost/web'") && got.contains("<body>hi desk</body>"),
        "{got}"
    );
    let _next = b.send(&server, "");
    assert_eq!(answer(&mut quiet), format!("<body xmlns='{NS}'/>"));
}

#[test]
fn a_stream_error_ends_the_session_with_remote_stream_error() {
    let server = start();
    let (mut b, _) = create(&server, 5);
    // A stanza before authentication.
    let a = b.roundtrip(
        &server,
        "<iq type='get' id='x'><ping xmlns='urn:xmpp:ping'/></iq>",
    );
    assert_eq!(
        a,
        format!("<body type='terminate' condition='remote-stream-error' xmlns='{NS}' xmlns:stream='http://etherx.jabber.org/streams'><stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></body>")
    );
    server.wait_metric("tidings_bosh_sessions", 0.0);
}

#[test]
fn bad_requests_wrong_domains_cors_and_the_session_limit() {
    let server = start_with(|c| c.max_bosh_sessions = 1);
    // Not a body, or a GET: clear HTTP errors, nothing opened.
    let r = server.request(&bosh_request("<iq/>"));
    assert_eq!(r.status, 400, "{}", r.show());
    let r = server.request(&bosh_request("<body rid='1' xmlns='urn:wrong'/>"));
    assert_eq!(r.status, 400, "{}", r.show());
    let r = server.request(&bosh_request(&format!("<body xmlns='{NS}'/>")));
    assert_eq!((r.status, r.body_str()), (400, "no rid\n"));
    let r = server.get("/http-bind");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("Allow"), Some("POST, OPTIONS"));
    // A preflight from a page on another origin.
    let r = server.request(&request_bytes(
        "OPTIONS",
        "/http-bind",
        &[
            ("Origin", "http://example.com"),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "Content-Type"),
        ],
        b"",
    ));
    assert_eq!(r.status, 204, "{}", r.show());
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some("*"));
    assert!(r
        .header("Access-Control-Allow-Methods")
        .unwrap()
        .contains("POST"));
    assert_eq!(server.metric("tidings_bosh_sessions"), Some(0.0));
    // Another domain.
    assert_eq!(
        roundtrip(
            &server,
            &format!("<body rid='1' to='example.org' wait='5' hold='1' xmlns='{NS}'/>")
        ),
        format!("<body type='terminate' condition='host-unknown' xmlns='{NS}'/>")
    );
    // One session is allowed; the second request for one gets 503.
    create(&server, 5);
    let r = server.request(&bosh_request(&format!(
        "<body rid='1' to='localhost' wait='5' hold='1' xmlns='{NS}'/>"
    )));
    assert_eq!(r.status, 503, "{}", r.show());
    assert_eq!(r.body_str(), "too many BOSH sessions\n");
    assert_eq!(r.header("Retry-After"), Some("1"));
    assert_eq!(
        server.metric("tidings_bosh_sessions_refused_total"),
        Some(1.0)
    );
}
