//! Frames and messages: NCHAN.md's byte examples, RFC 6455 5.7's examples, every protocol
//! error and its close code, the limits; properties against naive oracles (masking), the
//! encoder (round trips) and the splitting of the byte stream.

use proptest::prelude::*;

use super::*;
use crate::fuzzing::{ws_events, WsEvent};

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn client(fin: bool, opcode: Opcode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_client_frame(fin, opcode, payload, KEY, &mut out);
    out
}

fn concat(frames: &[Vec<u8>]) -> Vec<u8> {
    frames.concat()
}

/// Client frames (FIN, opcode, payload) one after the other.
fn frames(list: &[(bool, Opcode, &[u8])]) -> Vec<u8> {
    list.iter()
        .flat_map(|&(fin, op, p)| client(fin, op, p))
        .collect()
}

/// Reads a stream whole, a byte at a time, and split at every point: all must agree.
fn read_all(
    stream: &[u8],
    max_frame: usize,
    max_message: usize,
) -> (Vec<WsEvent>, Option<WsError>) {
    let whole = ws_events(stream, max_frame, max_message, []);
    let bytes = ws_events(stream, max_frame, max_message, vec![1; stream.len()]);
    assert_eq!(whole, bytes, "a byte at a time");
    for cut in 0..stream.len() {
        let split = ws_events(stream, max_frame, max_message, [cut]);
        assert_eq!(whole, split, "split at {cut}");
    }
    whole
}

fn events(stream: &[u8]) -> Vec<WsEvent> {
    let (events, err) = read_all(stream, 1 << 20, 1 << 20);
    assert_eq!(err, None, "{events:?}");
    events
}

fn error(stream: &[u8]) -> WsError {
    read_all(stream, 1 << 20, 1 << 20)
        .1
        .expect("a protocol error")
}

fn text(s: &str) -> WsEvent {
    WsEvent::Text(s.to_string())
}

fn encoded(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::new();
    f(&mut out);
    out
}

// ---- Server frames: NCHAN.md 6.2 byte for byte ----

#[test]
fn nchans_plain_frames() {
    assert_eq!(
        encoded(|o| encode_message(None, None, b"hello", o)),
        b"\x81\x05hello"
    );
    assert_eq!(
        encoded(|o| encode_message(None, Some("application/octet-stream"), &[0, 1], o)),
        b"\x82\x02\x00\x01"
    );
    assert_eq!(encoded(|o| encode_message(None, None, b"", o)), b"\x81\x00");
    assert_eq!(
        encoded(|o| encode_message(None, Some("text/plain"), b"a", o)),
        b"\x81\x01a"
    );
    assert_eq!(
        encoded(|o| encode_frame(Opcode::Text, b"hello", o)),
        b"\x81\x05hello"
    );
}

#[test]
fn nchans_meta_frames() {
    assert_eq!(
        encoded(|o| encode_message(Some("1796177227:0"), None, b"hello", o)),
        b"\x81\x17id: 1796177227:0\n\nhello"
    );
    let binary = encoded(|o| {
        encode_message(
            Some("1796177227:1"),
            Some("application/octet-stream"),
            &[0, 1],
            o,
        )
    });
    assert_eq!(
        binary,
        b"\x82\x3bid: 1796177227:1\ncontent-type: application/octet-stream\n\n\x00\x01"
    );
    assert_eq!(
        encoded(|o| meta_prefix("1:0", Some("text/plain"), o)),
        b"id: 1:0\ncontent-type: text/plain\n\n"
    );
    assert_eq!(encoded(|o| meta_prefix("1:0", None, o)), b"id: 1:0\n\n");
}

#[test]
fn nchans_close_frames() {
    assert_eq!(
        encoded(|o| encode_close(close::GOING_AWAY, "410 Gone", o)),
        b"\x88\x0a\x03\xe9410 Gone"
    );
    assert_eq!(
        encoded(|o| encode_close(close::NORMAL, "408 408 Request Timeout", o)),
        b"\x88\x19\x03\xe8408 408 Request Timeout"
    );
    assert_eq!(
        encoded(|o| encode_close(close::POLICY_VIOLATION, "Publishing not allowed.", o)),
        b"\x88\x19\x03\xf0Publishing not allowed."
    );
    assert_eq!(
        encoded(|o| encode_frame(Opcode::Close, b"", o)),
        b"\x88\x00"
    );
}

#[test]
fn a_close_reason_is_cut_to_123_bytes_at_a_character() {
    let long = "é".repeat(100);
    let frame = encoded(|o| encode_close(1000, &long, o));
    assert_eq!(frame[1], 2 + 122);
    assert_eq!(frame.len(), 2 + 2 + 122);
    assert!(std::str::from_utf8(&frame[4..]).is_ok());
    let ascii = "x".repeat(200);
    assert_eq!(encoded(|o| encode_close(1000, &ascii, o))[1], 125);
}

#[test]
fn ping_and_pong() {
    assert_eq!(PING, b"\x89\x00");
    assert_eq!(
        encoded(|o| encode_frame(Opcode::Pong, b"abc", o)),
        b"\x8a\x03abc"
    );
    // The RFC's ping, masked, and the pong echoing it.
    let ping = client(true, Opcode::Ping, b"Hello");
    let got = events(&ping);
    assert_eq!(got, vec![WsEvent::Ping(b"Hello".to_vec())]);
    // RFC 6455 5.7: "a masked Pong response".
    let pong = b"\x8a\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58";
    assert_eq!(events(pong), vec![WsEvent::Pong(b"Hello".to_vec())]);
}

#[test]
fn frame_heads_take_the_shortest_length() {
    let cases: [(usize, &[u8]); 6] = [
        (0, b"\x82\x00"),
        (125, b"\x82\x7d"),
        (126, b"\x82\x7e\x00\x7e"),
        (65535, b"\x82\x7e\xff\xff"),
        (65536, b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
        (1 << 40, b"\x82\x7f\x00\x00\x01\x00\x00\x00\x00\x00"),
    ];
    for (n, head) in cases {
        assert_eq!(frame_head(Opcode::Binary, n).as_bytes(), head, "{n}");
    }
}

#[test]
fn message_opcodes() {
    assert_eq!(message_opcode(None), Opcode::Text);
    assert_eq!(message_opcode(Some("text/plain")), Opcode::Text);
    assert_eq!(
        message_opcode(Some("application/octet-stream")),
        Opcode::Binary
    );
    assert_eq!(
        message_opcode(Some("application/octet-stream; x=1")),
        Opcode::Text
    );
}

// ---- Client frames: RFC 6455 5.7 ----

#[test]
fn the_rfcs_masked_hello() {
    let hello = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58";
    assert_eq!(events(hello), vec![text("Hello")]);
    assert_eq!(client(true, Opcode::Text, b"Hello"), hello);
}

#[test]
fn the_rfcs_unmasked_frames_are_refused_from_a_client() {
    assert_eq!(error(b"\x81\x05\x48\x65\x6c\x6c\x6f"), WsError::Unmasked);
    assert_eq!(error(b"\x01\x03\x48\x65\x6c"), WsError::Unmasked);
    assert_eq!(error(b"\x89\x05\x48\x65\x6c\x6c\x6f"), WsError::Unmasked);
    assert_eq!(WsError::Unmasked.code(), 1002);
}

#[test]
fn the_rfcs_fragmented_hello_masked() {
    // `01 03 "Hel"`, `80 02 "lo"`, each masked.
    let stream = concat(&[
        client(false, Opcode::Text, b"Hel"),
        client(true, Opcode::Continuation, b"lo"),
    ]);
    assert_eq!(&stream[..2], b"\x01\x83");
    assert_eq!(events(&stream), vec![text("Hello")]);
}

#[test]
fn the_rfcs_256_byte_and_64_kib_binary_frames() {
    for n in [256usize, 65536] {
        let payload: Vec<u8> = (0..n).map(|i| i as u8).collect();
        let frame = client(true, Opcode::Binary, &payload);
        let head: &[u8] = if n == 256 {
            b"\x82\xfe\x01\x00"
        } else {
            b"\x82\xff\x00\x00\x00\x00\x00\x01\x00\x00"
        };
        assert_eq!(&frame[..head.len()], head);
        let (got, err) = ws_events(&frame, 1 << 20, 1 << 20, vec![1; frame.len()]);
        assert_eq!((got, err), (vec![WsEvent::Binary(payload)], None));
    }
}

#[test]
fn lengths_need_not_be_minimal() {
    // "Hi" with a 16-bit and a 64-bit length.
    let mut masked = *b"Hi";
    unmask(&mut masked, KEY);
    let mut s16 = b"\x81\xfe\x00\x02".to_vec();
    s16.extend_from_slice(&KEY);
    s16.extend_from_slice(&masked);
    let mut s64 = b"\x81\xff\x00\x00\x00\x00\x00\x00\x00\x02".to_vec();
    s64.extend_from_slice(&KEY);
    s64.extend_from_slice(&masked);
    assert_eq!(events(&s16), vec![text("Hi")]);
    assert_eq!(events(&s64), vec![text("Hi")]);
}

#[test]
fn fragments_with_a_ping_between_them() {
    let stream = concat(&[
        client(false, Opcode::Binary, b"ab"),
        client(true, Opcode::Ping, b"p"),
        client(false, Opcode::Continuation, b""),
        client(true, Opcode::Pong, b""),
        client(true, Opcode::Continuation, b"cd"),
        client(true, Opcode::Text, b"next"),
        client(true, Opcode::Close, b"\x03\xe8bye"),
    ]);
    assert_eq!(
        events(&stream),
        vec![
            WsEvent::Ping(b"p".to_vec()),
            WsEvent::Pong(Vec::new()),
            WsEvent::Binary(b"abcd".to_vec()),
            text("next"),
            WsEvent::Close(Some((1000, "bye".to_string()))),
        ]
    );
}

#[test]
fn a_character_may_straddle_fragments() {
    let s = "añ€😀".as_bytes();
    let mut frames = vec![client(false, Opcode::Text, &s[..2])];
    for i in 2..s.len() - 1 {
        frames.push(client(false, Opcode::Continuation, &s[i..i + 1]));
    }
    frames.push(client(true, Opcode::Continuation, &s[s.len() - 1..]));
    assert_eq!(events(&concat(&frames)), vec![text("añ€😀")]);
}

#[test]
fn the_reader_holds_fragments_and_frees_them_after_the_message() {
    let mut r = Reader::new(100, 100);
    let mut first = client(false, Opcode::Text, b"ab");
    let n = first.len();
    assert_eq!(r.read(&mut first), Ok(Step::More { consumed: n }));
    assert!(r.in_message());
    let mut last = client(true, Opcode::Continuation, b"c");
    let n = last.len();
    assert_eq!(
        r.read(&mut last),
        Ok(Step::Event {
            event: Event::Text("abc"),
            consumed: n
        })
    );
    assert!(!r.in_message());
    assert_eq!(r.read(&mut []), Ok(Step::More { consumed: 0 }));
    assert_eq!(r.held_bytes(), 0);
}

#[test]
fn close_payloads() {
    type Case = (&'static [u8], Option<(u16, &'static str)>);
    let ok: [Case; 6] = [
        (b"", None),
        (b"\x03\xe8", Some((1000, ""))),
        (b"\x03\xe9going", Some((1001, "going"))),
        (b"\x03\xf6", Some((1014, ""))),
        (b"\x0b\xb8", Some((3000, ""))),
        (b"\x13\x87\xc3\xa9", Some((4999, "é"))),
    ];
    for (payload, want) in ok {
        let got = events(&client(true, Opcode::Close, payload));
        let want = WsEvent::Close(want.map(|(c, r)| (c, r.to_string())));
        assert_eq!(got, vec![want], "{payload:?}");
    }
    assert_eq!(
        error(&client(true, Opcode::Close, b"\x03")),
        WsError::CloseTooShort
    );
    for code in [
        0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ] {
        let e = error(&client(true, Opcode::Close, &code.to_be_bytes()));
        assert_eq!(e, WsError::BadCloseCode(code));
        assert_eq!(e.code(), 1002);
    }
    let e = error(&client(true, Opcode::Close, b"\x03\xe8\xff"));
    assert_eq!((e, e.code()), (WsError::NotUtf8, 1007));
}

#[test]
fn nothing_is_read_after_a_close() {
    let stream = concat(&[
        client(true, Opcode::Close, b""),
        client(true, Opcode::Text, b"late"),
    ]);
    assert_eq!(events(&stream), vec![WsEvent::Close(None)]);
}

// ---- Every protocol error and its close code ----

#[test]
fn protocol_errors_and_their_close_codes() {
    let big_ping = {
        // A 126-byte ping: the 7-bit length says so before the rest arrives.
        let mut f = b"\x89\xfe\x00\x7e".to_vec();
        f.extend_from_slice(&KEY);
        f.extend_from_slice(&[0; 126]);
        f
    };
    let cases: Vec<(Vec<u8>, WsError, u16)> = vec![
        (b"\xc1\x80".to_vec(), WsError::ReservedBits, 1002),
        (b"\xa1\x80".to_vec(), WsError::ReservedBits, 1002),
        (b"\x91\x80".to_vec(), WsError::ReservedBits, 1002),
        (b"\x83\x80".to_vec(), WsError::UnknownOpcode(3), 1002),
        (b"\x87\x80".to_vec(), WsError::UnknownOpcode(7), 1002),
        (b"\x8b\x80".to_vec(), WsError::UnknownOpcode(0xb), 1002),
        (b"\x8f\x80".to_vec(), WsError::UnknownOpcode(0xf), 1002),
        (b"\x81\x00".to_vec(), WsError::Unmasked, 1002),
        (b"\x09\x80".to_vec(), WsError::FragmentedControl, 1002),
        (b"\x08\x80".to_vec(), WsError::FragmentedControl, 1002),
        (big_ping, WsError::ControlTooLong, 1009),
        (b"\x8a\xff".to_vec(), WsError::ControlTooLong, 1009),
        (
            b"\x82\xff\x80\x00\x00\x00\x00\x00\x00\x00".to_vec(),
            WsError::BadLength,
            1002,
        ),
        (
            client(true, Opcode::Continuation, b"x"),
            WsError::NoMessageToContinue,
            1002,
        ),
        (
            frames(&[(false, Opcode::Text, b"a"), (true, Opcode::Text, b"b")]),
            WsError::MessageNotFinished,
            1002,
        ),
        (
            frames(&[(false, Opcode::Text, b"a"), (false, Opcode::Binary, b"b")]),
            WsError::MessageNotFinished,
            1002,
        ),
        (client(true, Opcode::Text, b"\xff"), WsError::NotUtf8, 1007),
        (
            client(true, Opcode::Text, b"\xe2\x82"),
            WsError::NotUtf8,
            1007,
        ),
        (
            frames(&[
                (false, Opcode::Text, b"\xe2\x82"),
                (true, Opcode::Continuation, b""),
            ]),
            WsError::NotUtf8,
            1007,
        ),
    ];
    for (stream, want, code) in cases {
        let got = error(&stream);
        assert_eq!((got, got.code()), (want, code), "{stream:02x?}");
        assert!(!got.to_string().is_empty());
    }
}

#[test]
fn invalid_text_fails_before_the_last_fragment() {
    // The second fragment can never become UTF-8: refused without waiting for the rest.
    let stream = concat(&[
        client(false, Opcode::Text, b"ok"),
        client(false, Opcode::Continuation, b"\xc3\x28"),
    ]);
    assert_eq!(error(&stream), WsError::NotUtf8);
}

#[test]
fn errors_come_from_the_header_before_the_payload() {
    // Only the header of an oversized frame has arrived: refused at once.
    let head = b"\x82\xff\x00\x00\x00\x00\x00\x10\x00\x00\x37\xfa\x21\x3d";
    let (got, err) = ws_events(head, 1024, 1024, []);
    assert_eq!((got, err), (vec![], Some(WsError::FrameTooLarge)));
    let (_, err) = ws_events(b"\x82\x7e", 1024, 1024, []);
    assert_eq!(err, None, "the 16-bit length is not in yet");
}

#[test]
fn limits_on_frames_and_messages() {
    let at = |n: usize| client(true, Opcode::Binary, &vec![7; n]);
    assert_eq!(read_all(&at(10), 10, 20).1, None);
    assert_eq!(read_all(&at(11), 10, 20).1, Some(WsError::FrameTooLarge));
    assert_eq!(read_all(&at(11), 20, 10).1, Some(WsError::MessageTooLarge));
    assert_eq!(WsError::FrameTooLarge.code(), 1009);
    assert_eq!(WsError::MessageTooLarge.code(), 1009);
    let fragments = |sizes: &[usize]| {
        let mut frames = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            let op = if i == 0 {
                Opcode::Text
            } else {
                Opcode::Continuation
            };
            frames.push(client(i + 1 == sizes.len(), op, &vec![b'x'; n]));
        }
        concat(&frames)
    };
    assert_eq!(read_all(&fragments(&[10, 10]), 10, 20).1, None);
    assert_eq!(
        read_all(&fragments(&[10, 10, 1]), 10, 20).1,
        Some(WsError::MessageTooLarge)
    );
    // Control frames are not counted in the message.
    let with_ping = concat(&[
        client(false, Opcode::Text, &[b'x'; 10]),
        client(true, Opcode::Ping, &[1; 10]),
        client(true, Opcode::Continuation, &[b'x'; 10]),
    ]);
    assert_eq!(read_all(&with_ping, 10, 20).1, None);
}

#[test]
fn events_borrow_the_buffer_unmasked_in_place() {
    let mut buf = concat(&[
        client(true, Opcode::Text, b"one"),
        client(true, Opcode::Text, b"two"),
    ]);
    let mut r = Reader::new(100, 100);
    let Ok(Step::Event { event, consumed }) = r.read(&mut buf) else {
        panic!("an event");
    };
    assert_eq!((event, consumed), (Event::Text("one"), 9));
    assert_eq!(&buf[6..9], b"one");
}

// ---- Properties ----

/// Masking a byte at a time, as RFC 6455 5.3 says it.
fn naive_mask(payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    payload
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ key[i % 4])
        .collect()
}

fn arb_event() -> impl Strategy<Value = WsEvent> {
    let small = prop::collection::vec(any::<u8>(), 0..=125);
    let big = prop::collection::vec(any::<u8>(), 0..600);
    prop_oneof![
        ".{0,80}".prop_map(WsEvent::Text),
        big.prop_map(WsEvent::Binary),
        small.clone().prop_map(WsEvent::Ping),
        small.prop_map(WsEvent::Pong),
    ]
}

/// An event as a client frames it: a message in fragments of `size` bytes (at least one
/// frame), with a ping after the first fragment when `ping` is set.
fn frame_event(e: &WsEvent, size: usize, ping: bool, key: [u8; 4], out: &mut Vec<u8>) {
    let (opcode, payload) = match e {
        WsEvent::Text(s) => (Opcode::Text, s.as_bytes()),
        WsEvent::Binary(b) => (Opcode::Binary, &b[..]),
        WsEvent::Ping(b) => return encode_client_frame(true, Opcode::Ping, b, key, out),
        WsEvent::Pong(b) => return encode_client_frame(true, Opcode::Pong, b, key, out),
        WsEvent::Close(_) => unreachable!("not generated"),
    };
    let chunks: Vec<&[u8]> = if payload.is_empty() {
        vec![&[]]
    } else {
        payload.chunks(size.max(1)).collect()
    };
    for (i, chunk) in chunks.iter().enumerate() {
        let op = if i == 0 { opcode } else { Opcode::Continuation };
        encode_client_frame(i + 1 == chunks.len(), op, chunk, key, out);
        if i == 0 && ping {
            encode_client_frame(true, Opcode::Ping, b"between", key, out);
        }
    }
}

proptest! {
    #[test]
    fn unmasking_is_the_naive_xor(payload in prop::collection::vec(any::<u8>(), 0..100), key: [u8; 4]) {
        let mut fast = payload.clone();
        unmask(&mut fast, key);
        prop_assert_eq!(&fast, &naive_mask(&payload, key));
        unmask(&mut fast, key);
        prop_assert_eq!(fast, payload);
    }

    #[test]
    fn what_a_client_encodes_reads_back(
        list in prop::collection::vec((arb_event(), 1usize..40, any::<bool>(), any::<[u8; 4]>()), 0..8),
        cuts in prop::collection::vec(0usize..50, 0..20),
    ) {
        let mut stream = Vec::new();
        let mut want = Vec::new();
        for (e, size, ping, key) in &list {
            let ping = *ping && !e_is_control(e) && e_len(e) > *size;
            frame_event(e, *size, ping, *key, &mut stream);
            if ping {
                want.push(WsEvent::Ping(b"between".to_vec()));
            }
            want.push(e.clone());
        }
        let whole = ws_events(&stream, 1 << 16, 1 << 16, []);
        prop_assert_eq!(&whole, &(want, None));
        prop_assert_eq!(&ws_events(&stream, 1 << 16, 1 << 16, cuts), &whole);
    }

    #[test]
    fn any_split_of_any_bytes_reads_the_same(
        stream in prop::collection::vec(any::<u8>(), 0..200),
        cuts in prop::collection::vec(0usize..16, 0..40),
    ) {
        let whole = ws_events(&stream, 64, 128, []);
        prop_assert_eq!(&ws_events(&stream, 64, 128, cuts), &whole);
        prop_assert_eq!(&ws_events(&stream, 64, 128, vec![1; stream.len()]), &whole);
    }

    #[test]
    fn server_frames_parse_back(payload in prop::collection::vec(any::<u8>(), 0..70_000), binary: bool) {
        let opcode = if binary { Opcode::Binary } else { Opcode::Text };
        let mut out = Vec::new();
        encode_frame(opcode, &payload, &mut out);
        let h = parse_header(&out).unwrap().unwrap();
        prop_assert_eq!((h.fin, h.opcode, h.mask), (true, opcode, None));
        prop_assert_eq!(h.payload_len as usize, payload.len());
        prop_assert_eq!(&out[h.len..], &payload[..]);
        let head = frame_head(opcode, payload.len());
        prop_assert_eq!(head.as_bytes(), &out[..h.len]);
    }
}

fn e_is_control(e: &WsEvent) -> bool {
    matches!(e, WsEvent::Ping(_) | WsEvent::Pong(_) | WsEvent::Close(_))
}

fn e_len(e: &WsEvent) -> usize {
    match e {
        WsEvent::Text(s) => s.len(),
        WsEvent::Binary(b) | WsEvent::Ping(b) | WsEvent::Pong(b) => b.len(),
        WsEvent::Close(_) => 0,
    }
}
