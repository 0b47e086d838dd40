//! Tests of the comet worker's request building and reply parsing.

use super::*;

#[test]
fn requests_are_byte_exact() {
    assert_eq!(
        sync_request("bench"),
        b"GET /comet?method=sync&channel=bench HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()
    );
    assert_eq!(
        get_request("a/b", 17),
        b"GET /comet?method=get&channel=a%2Fb&time=17 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()
    );
    assert_eq!(
        put_request("c", 3, 99),
        b"GET /comet?method=put&channel=c&message=3-99 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()
    );
}

#[test]
fn nchan_requests() {
    assert_eq!(
        nchan_sub_request("c", None),
        b"GET /sub?channel=c HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()
    );
    let cur = ("Thu, 01 Jan 2026 00:00:01 GMT".to_string(), "0".to_string());
    assert_eq!(
        nchan_sub_request("c", Some(&cur)),
        b"GET /sub?channel=c HTTP/1.1\r\nHost: x\r\nIf-Modified-Since: Thu, 01 Jan 2026 00:00:01 GMT\r\nIf-None-Match: 0\r\n\r\n".to_vec()
    );
    assert_eq!(
        nchan_pub_request("c", 2, 7),
        b"POST /pub?channel=c HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\n2-7".to_vec()
    );
    assert_eq!(Dialect::parse("nchan"), Ok(Dialect::Nchan));
    assert_eq!(Dialect::parse("qst"), Ok(Dialect::Qst));
    assert_eq!(
        qst_pull_request("q/1"),
        b"GET /qst/q%2F1?format=json&long-polling=true HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()
    );
    assert!(Dialect::parse("x").is_err());
}

#[test]
fn put_data() {
    let p = |s: &str| parse_put_data(&Value::Str(s.into()));
    assert_eq!(p("3-123456789"), Some((3, 123_456_789)));
    assert_eq!(p("3-"), None);
    assert_eq!(p("-5"), None);
    assert_eq!(p("3-5-6"), None);
    assert_eq!(p("x-5"), None);
    assert_eq!(p("3+5"), None);
    assert_eq!(parse_put_data(&Value::Num("35")), None);
}

#[test]
fn get_replies() {
    let r = parse_get_reply(
        br#"{"time":1700000000002,"messages":[{"time":1700000000001,"data":"1-500"},{"time":1700000000002,"data":{"x":1}}]}"#,
    )
    .unwrap();
    assert_eq!(r.time, 1_700_000_000_002);
    assert!(!r.missed);
    assert_eq!(
        r.messages[0],
        CometMsg {
            time: 1_700_000_000_001,
            data: Data::Put(1, 500)
        }
    );
    assert!(matches!(r.messages[1].data, Data::Other(_)));
    let empty = parse_get_reply(br#"{"time":42,"messages":[],"missed":true}"#).unwrap();
    assert_eq!(empty.time, 42);
    assert!(empty.messages.is_empty() && empty.missed);
    for bad in [
        &br#"[]"#[..],
        br#"{"messages":[]}"#,
        br#"{"time":"1","messages":[]}"#,
        br#"{"time":1}"#,
        br#"{"time":1,"messages":[{"data":"1-2"}]}"#,
        br#"{"time":1,"messages":[{"time":1}]}"#,
        br#"{"time":1,"messages":[],"missed":1}"#,
        br#"{"time":1,"messages":[]"#,
    ] {
        assert!(
            parse_get_reply(bad).is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn time_replies() {
    assert_eq!(
        parse_time_reply(br#"{"time":1700000000000}"#),
        Ok(1_700_000_000_000)
    );
    assert!(parse_time_reply(br#"{"time":-1}"#).is_err());
    assert!(parse_time_reply(b"cb({\"time\":1});").is_err());
}

#[test]
fn sequence_checks() {
    let mut s = Seen::new();
    assert!(s.note(1));
    assert!(s.note(2));
    assert!(!s.note(2));
    assert!(s.note(5));
    assert!(!s.note(4));
    assert!(s.note(6));
    assert_eq!(
        s,
        Seen {
            next: 7,
            received: 4,
            dups: 2,
            gaps: 2
        }
    );
}

#[test]
fn commands_parse() {
    assert!(matches!(parse_cmd("COLLECT 200 99"), Cmd::Collect(200, 99)));
    assert!(matches!(parse_cmd("COLLECT x 99"), Cmd::Bad(_)));
    assert!(matches!(parse_cmd("QUIT"), Cmd::Quit));
    assert!(matches!(parse_cmd("ARM x"), Cmd::Bad(_)));
}
