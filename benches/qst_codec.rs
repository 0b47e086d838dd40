//! QST codec throughput: decode and encode a batch of 10 typical messages (id, from, to,
//! when, a ~100-byte body, 2 properties), in XML (v2) and JSON.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tidings::hub::{Draft, Message, Origin};
use tidings::proto::qst::{json, xml};

/// Messages in one batch: a pull's default `max`.
const BATCH: usize = 10;

fn batch() -> Vec<Message> {
    (0..BATCH)
        .map(|i| {
            let draft = Draft {
                id: Some(format!("24c287ba-9007-4280-99aa-66e0baa69f{i:02}")),
                from: "sms://5550002".to_owned(),
                to: "sms://5550001".to_owned(),
                when: Some(1_262_387_933 + i as i64),
                subject: None,
                body: format!(
                    "Message {i}: the water pump at the north well is working again & the \
                     road to the clinic is open <ok>."
                )
                .into_bytes(),
                properties: vec![
                    ("country".to_owned(), "ke".to_owned()),
                    ("carrier".to_owned(), "safaricom".to_owned()),
                ],
                ..Draft::default()
            };
            let id = draft.id.clone().unwrap_or_default();
            let when = draft.when.unwrap_or_default();
            Message::new(i as u64 + 1, id, when, Origin::Qst, draft)
        })
        .collect()
}

fn codecs(c: &mut Criterion) {
    let msgs = batch();
    let refs: Vec<&Message> = msgs.iter().collect();
    let mut xml_doc = Vec::new();
    xml::encode(&refs, false, &mut xml_doc);
    let mut json_doc = Vec::new();
    json::encode(&refs, &mut json_doc);
    assert_eq!(xml::decode(&xml_doc).map(|d| d.len()), Ok(BATCH));
    assert_eq!(json::decode(&json_doc).map(|d| d.len()), Ok(BATCH));

    let mut g = c.benchmark_group("qst_xml");
    g.throughput(Throughput::Bytes(xml_doc.len() as u64));
    g.bench_function("decode_10", |b| b.iter(|| xml::decode(black_box(&xml_doc))));
    let mut out = Vec::with_capacity(xml_doc.len());
    g.bench_function("encode_10", |b| {
        b.iter(|| {
            out.clear();
            xml::encode(black_box(&refs), false, &mut out);
            out.len()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("qst_json");
    g.throughput(Throughput::Bytes(json_doc.len() as u64));
    g.bench_function("decode_10", |b| {
        b.iter(|| json::decode(black_box(&json_doc)))
    });
    let mut out = Vec::with_capacity(json_doc.len());
    g.bench_function("encode_10", |b| {
        b.iter(|| {
            out.clear();
            json::encode(black_box(&refs), &mut out);
            out.len()
        })
    });
    g.finish();
}

criterion_group!(benches, codecs);
criterion_main!(benches);
