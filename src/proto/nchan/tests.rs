use std::time::Duration;

use super::streams::event_record;
use super::*;
use crate::hub::Draft;

fn info(
    messages: usize,
    subscribers: usize,
    requested: Option<u64>,
    last: Option<u64>,
) -> ChannelInfo {
    ChannelInfo {
        messages,
        subscribers,
        requested: requested.map(Duration::from_secs),
        last_seq: last,
    }
}

#[test]
fn ids_map_seq_to_time_and_tag_and_back() {
    assert_eq!(message_id(1_796_177_201_347), "1796177201:347");
    assert_eq!(message_id(1_796_177_201_000), "1796177201:0");
    assert_eq!(
        parse_id(b"1796177201:347").unwrap(),
        Some(1_796_177_201_347)
    );
    // A real nchan's dense tags past 999 mean "after everything in that second".
    assert_eq!(
        parse_id(b"1796177201:4000").unwrap(),
        Some(1_796_177_201_999)
    );
    assert_eq!(parse_id(b"1796177201:-").unwrap(), Some(1_796_177_200_999));
    assert_eq!(parse_id(b"1796177201:-1").unwrap(), Some(1_796_177_200_999));
    // TIME ≤ 0 or no colon: no cursor. Multi-channel ids: invalid.
    assert_eq!(parse_id(b"0:0").unwrap(), None);
    assert_eq!(parse_id(b"5").unwrap(), None);
    for bad in [&b"[1],[2]"[..], b"1:[0],1", b"x:1", b"1:y"] {
        let r = parse_id(bad).unwrap_err();
        assert_eq!((r.status, &r.body[..]), (400, &b"Message ID invalid"[..]));
    }
}

#[test]
fn the_four_info_formats_are_byte_exact() {
    let i = info(1, 0, None, Some(1_796_177_201_000));
    assert_eq!(
        info_body(&i, InfoFormat::Plain),
        ("text/plain", "queued messages: 1\r\nlast requested: -1 sec. ago\r\nactive subscribers: 0\r\nlast message id: 1796177201:0".to_string())
    );
    let i = info(2, 3, Some(7), None);
    assert_eq!(
        info_body(&i, InfoFormat::Json),
        ("text/json", "{\"messages\": 2, \"requested\": 7, \"subscribers\": 3, \"last_message_id\": \"0:0\" }".to_string())
    );
    assert_eq!(
        info_body(&i, InfoFormat::Yaml),
        ("text/yaml", "---\r\nmessages: 2\r\nrequested: 7\r\nsubscribers: 3\r\nlast_message_id: \"0:0\"\r\n\r\n".to_string())
    );
    assert_eq!(
        info_body(&i, InfoFormat::Xml),
        ("text/xml", "<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\r\n<channel>\r\n  <messages>2</messages>\r\n  <requested>7</requested>\r\n  <subscribers>3</subscribers>\r\n  <last_message_id>0:0</last_message_id>\r\n</channel>".to_string())
    );
}

#[test]
fn accept_is_scanned_as_nchan_scans_it() {
    let f = |a: &str| info_format(Some(a.as_bytes()));
    assert_eq!(info_format(None), InfoFormat::Plain);
    assert_eq!(f("*/*"), InfoFormat::Plain);
    assert_eq!(f("application/json"), InfoFormat::Json);
    assert_eq!(f("text/x-json"), InfoFormat::Json);
    assert_eq!(f("text/yaml"), InfoFormat::Yaml);
    assert_eq!(f("application/x-yaml"), InfoFormat::Yaml);
    assert_eq!(f("text/xml"), InfoFormat::Xml);
    // A browser's default Accept: the first element with a known subtype is XML.
    assert_eq!(
        f("text/html,application/xhtml+xml,application/xml;q=0.9,*/*"),
        InfoFormat::Xml
    );
}

fn message(seq: u64, body: &[u8], event: Option<&str>) -> Message {
    let d = Draft {
        event: event.map(str::to_string),
        ..Draft::with_body(body)
    };
    Message::new(seq, "id".into(), 0, Origin::Nchan, d)
}

#[test]
fn eventsource_records_frame_lines_and_events() {
    // NCHAN.md 6.1's probe: `a\nb\n`, then empty with event `tick`, then `bin`.
    let mut all = Vec::new();
    for m in [
        message(1_796_177_209_000, b"a\nb\n", None),
        message(1_796_177_209_001, b"", Some("tick")),
        message(1_796_177_210_000, b"bin", None),
    ] {
        all.extend_from_slice(&event_record(&m));
    }
    assert_eq!(
        String::from_utf8(all).unwrap(),
        "id: 1796177209:0\ndata: a\ndata: b\ndata: \n\nevent: tick\nid: 1796177209:1\ndata: \n\nid: 1796177210:0\ndata: bin\n\n"
    );
    // D3: `\r\n` and a bare `\r` end lines too.
    let m = message(1_000, b"x\r\ny\rz", None);
    assert_eq!(
        &event_record(&m)[..],
        b"id: 1:0\ndata: x\ndata: y\ndata: z\n\n"
    );
    // An event name cannot smuggle a field of its own.
    let m = message(1_000, b"", Some("a\ndata: evil"));
    assert_eq!(&event_record(&m)[..], b"event: a\nid: 1:0\ndata: \n\n");
}

#[test]
fn imf_dates_read_back() {
    let d = crate::http::imf_fixdate(1_796_177_201);
    assert_eq!(crate::time::parse_imf_fixdate(&d), Some(1_796_177_201));
    assert_eq!(
        crate::time::parse_imf_fixdate(b"Thu, 01 Jan 1970 00:00:00 GMT"),
        Some(0)
    );
    assert_eq!(
        crate::time::parse_imf_fixdate(b"Thu, 31 Feb 2026 00:00:00 GMT"),
        None
    );
    assert_eq!(crate::time::parse_imf_fixdate(b"yesterday"), None);
}

#[test]
fn messages_of_other_protocols_are_text_plain_on_sub() {
    let nchan = message(1_000, b"x", None);
    assert_eq!(
        content_type(&nchan),
        None,
        "an nchan publish without one has none"
    );
    let d = Draft {
        content_type: Some("application/json".into()),
        ..Draft::with_body("{}")
    };
    let typed = Message::new(2_000, "id".into(), 0, Origin::Nchan, d);
    assert_eq!(content_type(&typed), Some("application/json"));
    let talk = Message::new(3_000, "id".into(), 0, Origin::Talk, Draft::with_body("hi"));
    assert_eq!(content_type(&talk), Some("text/plain"));
    // XMPP subscribers see an nchan message's content type and event name.
    let d = Draft {
        content_type: Some("text/x-a".into()),
        event: Some("tick".into()),
        ..Draft::with_body("b")
    };
    let m = Message::new(4_000, "id".into(), 0, Origin::Nchan, d);
    let mut s = String::new();
    crate::proto::xmpp::pubsub::payload(&m, &mut s);
    assert!(
        s.contains("' content-type='text/x-a' event='tick'>b</message>"),
        "{s}"
    );
}

#[test]
fn a_stream_kind_stays_small() {
    // A Talk stream pays for the largest kind inline: the WebSocket one is boxed.
    assert!(
        std::mem::size_of::<crate::proto::stream::StreamKind>() <= 32,
        "{}",
        std::mem::size_of::<crate::proto::stream::StreamKind>()
    );
}
