//! QST push (PROTOCOLS.md 1.2, 1.2a, 1.3) and `HEAD /qst/{channel}` (1.1): formats and their
//! sniffing, the raw unquoted `ETag`, idempotent retries, all-or-nothing batches, server ids,
//! times, the attributes every output message carries, properties, escaping and non-ASCII.
//! Every stored effect is checked by pulling it back over the wire.

mod qst_support;

use qst_support::*;

#[test]
fn xml_push_answers_200_with_the_raw_unquoted_etag_of_the_last_message() {
    let server = start();
    let mut c = server.connect();
    let r = c.push("q", "text/xml", &xml_batch(&["mo-1", "mo-2"]));
    assert_eq!(r.status, 200, "{}", r.show());
    assert!(
        r.has_line("ETag: mo-2"),
        "exact header line `ETag: mo-2` wanted: {}",
        r.show()
    );
    assert_eq!(r.etag(), "mo-2");
    // The batch is stored, in order, with what was sent.
    let msgs = c.pull("q", "").messages();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0].id, "mo-1");
    assert_eq!(msgs[1].id, "mo-2");
    assert_eq!(msgs[0].body.as_deref(), Some("body of mo-1"));
    assert_eq!(msgs[0].from, "sms://1000");
    assert_eq!(msgs[0].to, "sms://2000");
    assert_eq!(msgs[0].when, "2010-01-01T23:18:53Z");
}

#[test]
fn application_xml_and_a_charset_parameter_are_accepted() {
    let server = start();
    let mut c = server.connect();
    let r = c.push("q", "application/xml", &xml_batch(&["a"]));
    assert_eq!(r.status, 200, "{}", r.show());
    assert!(r.has_line("ETag: a"), "{}", r.show());
    let r = c.push("q", "text/xml; charset=utf-8", &xml_batch(&["b"]));
    assert_eq!(r.status, 200, "{}", r.show());
    assert!(r.has_line("ETag: b"), "{}", r.show());
    assert_eq!(c.pull("q", "").ids(), ["a", "b"]);
}

#[test]
fn json_push_is_stored_with_every_field() {
    let server = start();
    let mut c = server.connect();
    let body = r#"[{"id":"j-1","from":"sms://838383","to":"twitter://foo","when":"2010-01-01T23:18:53Z",
        "subject":"Subject","body":"Body","custom-property":"foo","another-property":"123"},
        {"id":"j-2","body":"second"}]"#;
    let r = c.push("q", "application/json", body);
    assert_eq!(r.status, 200, "{}", r.show());
    assert!(r.has_line("ETag: j-2"), "{}", r.show());
    for format in ["xml", "json"] {
        let msgs = c.pull("q", &format!("format={format}")).messages();
        assert_eq!(msgs.len(), 2, "{format}");
        let m = &msgs[0];
        assert_eq!(m.id, "j-1");
        assert_eq!(m.from, "sms://838383");
        assert_eq!(m.to, "twitter://foo");
        assert_eq!(m.when, "2010-01-01T23:18:53Z");
        assert_eq!(m.subject.as_deref(), Some("Subject"));
        assert_eq!(m.body.as_deref(), Some("Body"));
        assert_eq!(m.prop("custom-property"), ["foo"]);
        assert_eq!(m.prop("another-property"), ["123"]);
        assert_eq!(msgs[1].id, "j-2");
        assert_eq!(msgs[1].body.as_deref(), Some("second"));
    }
}

#[test]
fn a_retried_push_of_known_ids_is_stored_once_and_still_succeeds() {
    let server = start();
    let mut c = server.connect();
    assert_eq!(c.push("q", "text/xml", &xml_batch(&["a", "b"])).status, 200);
    // The gateway did not get the reply and sends the batch again, plus a new message.
    let r = c.push("q", "text/xml", &xml_batch(&["a", "b", "c"]));
    assert_eq!(r.status, 200, "{}", r.show());
    assert!(r.has_line("ETag: c"), "{}", r.show());
    // The same batch again, nothing new: still a success with the batch's last id.
    let r = c.push("q", "text/xml", &xml_batch(&["a", "b"]));
    assert_eq!(r.status, 200, "{}", r.show());
    assert!(r.has_line("ETag: b"), "{}", r.show());
    // The same id twice in one batch is one message.
    let r = c.push(
        "q",
        "application/json",
        r#"[{"id":"d","body":"x"},{"id":"d","body":"x"}]"#,
    );
    assert_eq!(r.status, 200, "{}", r.show());
    assert_eq!(c.pull("q", "max=100").ids(), ["a", "b", "c", "d"]);
    assert_eq!(server.metrics().messages_published.get(), 4);
}

#[test]
fn a_retried_push_after_the_consumer_acknowledged_is_not_delivered_again() {
    let server = start();
    let mut c = server.connect();
    assert_eq!(c.push("q", "text/xml", &xml_batch(&["a", "b"])).status, 200);
    assert_eq!(c.pull("q", "").ids(), ["a", "b"]);
    assert!(c.pull("q", "etag=b").ids().is_empty());
    let r = c.push("q", "text/xml", &xml_batch(&["a", "b"]));
    assert_eq!(r.status, 200, "{}", r.show());
    assert!(
        c.pull("q", "").ids().is_empty(),
        "an acknowledged message came back after an idempotent re-push"
    );
}

#[test]
fn an_empty_batch_succeeds_and_stores_nothing() {
    let server = start();
    let mut c = server.connect();
    for (ct, body) in [
        ("text/xml", xml_doc("")),
        ("text/xml", format!("{GATEWAY_DECL}<messages/>")),
        ("application/json", "[]".to_string()),
        ("application/json", " [ ] ".to_string()),
    ] {
        let r = c.push("q", ct, &body);
        assert_eq!(r.status, 200, "{ct} {body}: {}", r.show());
    }
    assert!(c.pull("q", "").ids().is_empty());
    assert_eq!(server.head_etag("q"), "");
    assert_eq!(server.metrics().messages_published.get(), 0);
}

#[test]
fn form_encoded_and_other_content_types_get_415_and_store_nothing() {
    let server = start();
    let mut c = server.connect();
    let xml = xml_batch(&["x-1"]);
    for (ct, body) in [
        ("application/x-www-form-urlencoded", "id=x-1&body=hello"),
        ("application/x-www-form-urlencoded", xml.as_str()),
        ("text/plain", xml.as_str()),
        ("multipart/form-data; boundary=zz", xml.as_str()),
        ("text/html", xml.as_str()),
    ] {
        let r = c.push("q", ct, body);
        assert_eq!(r.status, 415, "{ct}: {}", r.show());
        assert!(
            r.header("Content-Type")
                .unwrap_or("")
                .starts_with("text/plain"),
            "{}",
            r.show()
        );
        assert!(!r.body.is_empty(), "an error says what was wrong");
    }
    assert!(c.pull("q", "").ids().is_empty());
    assert_eq!(server.head_etag("q"), "");
}

#[test]
fn without_content_type_the_body_is_sniffed() {
    let server = start();
    let mut c = server.connect();
    let r = c.request("POST", "/qst/q", &[], xml_batch(&["sx"]).as_bytes());
    assert_eq!(r.status, 200, "{}", r.show());
    assert!(r.has_line("ETag: sx"), "{}", r.show());
    let r = c.request(
        "POST",
        "/qst/q",
        &[],
        b"  [{\"id\":\"sj\",\"body\":\"json\"}]",
    );
    assert_eq!(r.status, 200, "{}", r.show());
    assert!(r.has_line("ETag: sj"), "{}", r.show());
    // Neither `<` nor `[`: refused, nothing stored.
    let r = c.request("POST", "/qst/q", &[], b"id=z&body=form");
    assert!(
        r.status == 415 || r.status == 400,
        "a body that is neither XML nor JSON: {}",
        r.show()
    );
    let msgs = c.pull("q", "").messages();
    assert_eq!(
        msgs.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
        ["sx", "sj"]
    );
    assert_eq!(msgs[1].body.as_deref(), Some("json"));
}

#[test]
fn a_batch_with_one_bad_message_is_refused_whole() {
    let server = start();
    let mut c = server.connect();
    let good = xml_msg("g-1", "good");
    let bad_xml = [
        // An unparsable time in the second message.
        xml_doc(&format!(
            r#"{good}<message id="g-2" when="2010-13-45T99:00:00Z"><body>bad</body></message>{}"#,
            xml_msg("g-3", "good")
        )),
        xml_doc(&format!(
            r#"{good}<message id="g-2" when="yesterday"><body>bad</body></message>"#
        )),
        // Malformed XML after a good message.
        xml_doc(&format!(
            r#"{good}<message id="g-2"><body>unclosed</message>"#
        )),
        // An unknown element inside a message.
        xml_doc(&format!(
            r#"{good}<message id="g-2"><color>red</color></message>"#
        )),
        // A truncated document.
        format!("{GATEWAY_DECL}<messages>{good}"),
    ];
    for body in &bad_xml {
        let r = c.push("q", "text/xml", body);
        assert_eq!(r.status, 400, "{body}: {}", r.show());
        assert!(
            r.header("Content-Type")
                .unwrap_or("")
                .starts_with("text/plain"),
            "{}",
            r.show()
        );
        assert!(!r.body.is_empty(), "the 400 says what was wrong");
    }
    let bad_json = [
        r#"[{"id":"g-1","body":"good"},{"id":"g-2","when":"2010-02-30T00:00:00Z","body":"bad"}]"#,
        r#"[{"id":"g-1","body":"good"},"not an object"]"#,
        r#"[{"id":"g-1","body":"good"},{"id":"g-2","body":"bad"}"#,
        r#"{"id":"g-1","body":"not an array"}"#,
    ];
    for body in bad_json {
        let r = c.push("q", "application/json", body);
        assert_eq!(r.status, 400, "{body}: {}", r.show());
    }
    // Nothing of any refused batch was stored.
    assert!(c.pull("q", "").ids().is_empty());
    assert_eq!(server.head_etag("q"), "");
    assert_eq!(server.metrics().messages_published.get(), 0);
}

#[test]
fn messages_without_ids_get_unique_server_ids() {
    let server = start();
    let mut c = server.connect();
    let batch = xml_doc("<message><body>one</body></message><message><body>two</body></message>");
    let r1 = c.push("q", "text/xml", &batch);
    assert_eq!(r1.status, 200, "{}", r1.show());
    let r2 = c.push(
        "q",
        "application/json",
        r#"[{"body":"three"},{"id":"","body":"four"}]"#,
    );
    assert_eq!(r2.status, 200, "{}", r2.show());
    let msgs = c.pull("q", "").messages();
    let ids: Vec<&str> = msgs.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(msgs.len(), 4, "{ids:?}");
    assert_eq!(
        msgs.iter()
            .map(|m| m.body.as_deref().unwrap())
            .collect::<Vec<_>>(),
        ["one", "two", "three", "four"]
    );
    for (i, id) in ids.iter().enumerate() {
        assert!(!id.is_empty(), "message {i} has no id");
        assert!(!ids[..i].contains(id), "id {id} given twice: {ids:?}");
    }
    // The push's ETag is the id the server gave its last message.
    assert_eq!(r1.etag(), ids[1]);
    assert_eq!(r2.etag(), ids[3]);
    assert_eq!(server.head_etag("q"), ids[3]);
}

#[test]
fn times_with_an_offset_or_a_fraction_come_out_as_utc_z() {
    let server = start();
    let mut c = server.connect();
    let xml = xml_doc(
        r#"<message id="t-1" when="2010-01-02T01:18:53+02:00"><body/></message>
           <message id="t-2" when="2009-12-31T23:48:53.250-23:30"><body/></message>
           <message id="t-3" when="2010-01-01T23:18:53.123456Z"><body/></message>"#,
    );
    assert_eq!(c.push("q", "text/xml", &xml).status, 200);
    let r = c.push(
        "q",
        "application/json",
        r#"[{"id":"t-4","when":"2010-01-01T18:18:53-05:00"}]"#,
    );
    assert_eq!(r.status, 200, "{}", r.show());
    for format in ["xml", "json"] {
        let msgs = c.pull("q", &format!("format={format}")).messages();
        let whens: Vec<&str> = msgs.iter().map(|m| m.when.as_str()).collect();
        assert_eq!(
            whens,
            [
                "2010-01-01T23:18:53Z",
                "2010-01-01T23:18:53Z",
                "2010-01-01T23:18:53Z",
                "2010-01-01T23:18:53Z"
            ],
            "{format}"
        );
    }
}

#[test]
fn times_whose_utc_year_leaves_0000_to_9999_keep_the_output_form() {
    let server = start();
    let mut c = server.connect();
    let r = c.push(
        "q",
        "application/json",
        r#"[{"id":"late","when":"9999-12-31T23:59:59-23:59"},{"id":"early","when":"0000-01-01T00:00:00+23:00"}]"#,
    );
    assert!(r.status == 200 || r.status == 400, "{}", r.show());
    if r.status == 200 {
        for format in ["xml", "json"] {
            for m in c.pull("q", &format!("format={format}")).messages() {
                assert!(is_utc_z(&m.when), "{format} {}: {:?}", m.id, m.when);
            }
        }
    }
}

#[test]
fn a_push_without_when_is_stamped_with_the_server_time() {
    let server = start();
    let mut c = server.connect();
    let before = unix_now();
    let r = c.push(
        "q",
        "text/xml",
        &xml_doc(r#"<message id="n-1"><body>now</body></message>"#),
    );
    assert_eq!(r.status, 200, "{}", r.show());
    let after = unix_now();
    let m = &c.pull("q", "").messages()[0];
    assert!(is_utc_z(&m.when), "{:?}", m.when);
    let t = utc_z_to_unix(&m.when);
    assert!(before <= t && t <= after, "{before} <= {t} <= {after}");
}

#[test]
fn output_always_carries_id_from_to_when_and_a_body() {
    let server = start();
    let mut c = server.connect();
    let r = c.push("q", "text/xml", &xml_doc(r#"<message id="bare"/>"#));
    assert_eq!(r.status, 200, "{}", r.show());
    let r = c.push("q", "application/json", r#"[{"id":"bare-json"}]"#);
    assert_eq!(r.status, 200, "{}", r.show());
    let xml = c.pull("q", "");
    let text = xml.text();
    assert!(
        text.contains(r#"<message id="bare" from="" to="" when=""#),
        "attributes in order, empty when unset: {text}"
    );
    assert!(
        text.contains("<body></body>") || text.contains("<body/>"),
        "{text}"
    );
    for m in xml.messages() {
        assert_eq!((m.from.as_str(), m.to.as_str()), ("", ""));
        assert!(is_utc_z(&m.when), "{:?}", m.when);
        assert_eq!(m.body.as_deref(), Some(""), "{text}");
        assert_eq!(m.text, None, "v2 output has no <text>");
    }
    let json = c.pull("q", "format=json");
    let v: serde_json::Value = serde_json::from_slice(&json.body).unwrap();
    for o in v.as_array().unwrap() {
        for key in ["id", "from", "to", "when", "body"] {
            assert!(o.get(key).is_some_and(|x| x.is_string()), "{key} in {o}");
        }
    }
    assert_eq!(json.ids(), ["bare", "bare-json"]);
}

#[test]
fn repeated_property_names_keep_every_value_in_order() {
    let server = start();
    let mut c = server.connect();
    let xml = xml_doc(
        r#"<message id="p-1"><body>b</body>
             <property name="tag" value="a"/><property name="other" value="o"/>
             <property name="tag" value="b"/><property name="tag" value="c"/></message>"#,
    );
    assert_eq!(c.push("q", "text/xml", &xml).status, 200);
    let r = c.push(
        "q",
        "application/json",
        r#"[{"id":"p-2","body":"b","tag":["x","y"],"single":"s"}]"#,
    );
    assert_eq!(r.status, 200, "{}", r.show());
    let msgs = c.pull("q", "").messages();
    assert_eq!(msgs[0].prop("tag"), ["a", "b", "c"]);
    assert_eq!(msgs[0].prop("other"), ["o"]);
    assert_eq!(msgs[1].prop("tag"), ["x", "y"]);
    assert_eq!(msgs[1].prop("single"), ["s"]);
    // In JSON a repeated name is an array of strings.
    let json = c.pull("q", "format=json");
    let v: serde_json::Value = serde_json::from_slice(&json.body).unwrap();
    assert_eq!(v[0]["tag"], serde_json::json!(["a", "b", "c"]));
    assert_eq!(v[0]["other"], serde_json::json!("o"));
    assert_eq!(v[1]["tag"], serde_json::json!(["x", "y"]));
}

#[test]
fn non_string_json_scalars_are_kept_as_their_json_text() {
    let server = start();
    let mut c = server.connect();
    let r = c.push(
        "q",
        "application/json",
        r#"[{"id":"s-1","body":"b","count":123,"flag":true,"off":false,"ratio":1.5,"neg":-7}]"#,
    );
    assert_eq!(r.status, 200, "{}", r.show());
    for format in ["xml", "json"] {
        let m = &c.pull("q", &format!("format={format}")).messages()[0];
        assert_eq!(m.prop("count"), ["123"], "{format}");
        assert_eq!(m.prop("flag"), ["true"], "{format}");
        assert_eq!(m.prop("off"), ["false"], "{format}");
        assert_eq!(m.prop("ratio"), ["1.5"], "{format}");
        assert_eq!(m.prop("neg"), ["-7"], "{format}");
    }
}

#[test]
fn non_ascii_and_markup_characters_round_trip() {
    let server = start();
    let mut c = server.connect();
    let xml = xml_doc(
        r#"<message id="ü-1" from="sms://ü" to="twitter://日本"><subject>héllo ✓</subject><body>日本語 😀 &amp; &lt;b&gt; &quot;q&quot; &#233;&#x263A;<![CDATA[<raw & cdata>]]></body><property name="é" value="ß &amp; &quot;x&quot;"/></message>"#,
    );
    let r = c.push("q", "text/xml", &xml);
    assert_eq!(r.status, 200, "{}", r.show());
    assert!(r.has_line("ETag: ü-1"), "{}", r.show());
    let r = c.push(
        "q",
        "application/json",
        r#"[{"id":"ü-2","body":"caf\u00e9 \ud83d\ude00 <tag> & \"quoted\"","ключ":"значение"}]"#,
    );
    assert_eq!(r.status, 200, "{}", r.show());
    for format in ["xml", "json"] {
        let msgs = c.pull("q", &format!("format={format}")).messages();
        assert_eq!(msgs[0].id, "ü-1");
        assert_eq!(msgs[0].from, "sms://ü");
        assert_eq!(msgs[0].to, "twitter://日本");
        assert_eq!(msgs[0].subject.as_deref(), Some("héllo ✓"));
        assert_eq!(
            msgs[0].body.as_deref(),
            Some("日本語 😀 & <b> \"q\" é☺<raw & cdata>"),
            "{format}"
        );
        assert_eq!(msgs[0].prop("é"), ["ß & \"x\""]);
        assert_eq!(msgs[1].id, "ü-2");
        assert_eq!(msgs[1].body.as_deref(), Some("café 😀 <tag> & \"quoted\""));
        assert_eq!(msgs[1].prop("ключ"), ["значение"]);
    }
}

#[test]
fn tabs_and_line_breaks_survive_an_xml_parser() {
    let server = start();
    let mut c = server.connect();
    let r = c.push(
        "q",
        "application/json",
        r#"[{"id":"w-1","from":"a\tb\nc\rd","body":"line 1\r\nline 2\n\tindented\r"}]"#,
    );
    assert_eq!(r.status, 200, "{}", r.show());
    let r = c.pull("q", "");
    // A raw CR would be normalised away by any XML parser, and so would raw tabs and line
    // feeds inside an attribute: they must be written as character references.
    let text = r.text();
    assert!(!text.contains('\r'), "raw CR in the XML: {text:?}");
    let open = text.find("<message ").unwrap();
    let tag = &text[open..open + text[open..].find('>').unwrap()];
    assert!(
        !tag.contains('\t') && !tag.contains('\n'),
        "raw whitespace in attributes: {tag:?}"
    );
    let m = &r.messages()[0];
    assert_eq!(m.from, "a\tb\nc\rd");
    assert_eq!(m.body.as_deref(), Some("line 1\r\nline 2\n\tindented\r"));
    let m = &c.pull("q", "format=json").messages()[0];
    assert_eq!(m.body.as_deref(), Some("line 1\r\nline 2\n\tindented\r"));
}

#[test]
fn v2_input_accepts_text_for_body() {
    let server = start();
    let mut c = server.connect();
    let xml = xml_doc(
        r#"<message id="v-1" from="sms://1" to="sms://2"><text>from a v1 client</text></message>"#,
    );
    assert_eq!(c.push("q", "text/xml", &xml).status, 200);
    let m = &c.pull("q", "").messages()[0];
    assert_eq!(m.body.as_deref(), Some("from a v1 client"));
    assert_eq!(m.text, None);
}

#[test]
fn head_gives_the_last_pushed_id_and_an_empty_value_when_none() {
    let server = start();
    let mut c = server.connect();
    let r = c.request("HEAD", "/qst/q", &[], b"");
    assert_eq!(r.status, 200, "{}", r.show());
    assert!(
        r.has_line("ETag: "),
        "an ETag header with an empty value: {}",
        r.show()
    );
    assert_eq!(r.etag(), "");
    assert!(r.body.is_empty());
    assert_eq!(
        c.push("q", "text/xml", &xml_batch(&["h-1", "h-2"])).status,
        200
    );
    let r = c.request("HEAD", "/qst/q", &[], b"");
    assert_eq!(r.status, 200);
    assert!(r.has_line("ETag: h-2"), "{}", r.show());
    // Pulling and acknowledging does not change where the pusher resumes.
    assert_eq!(c.pull("q", "").ids(), ["h-1", "h-2"]);
    assert!(c.pull("q", "etag=h-2").ids().is_empty());
    let r = c.request("HEAD", "/qst/q", &[], b"");
    assert!(r.has_line("ETag: h-2"), "{}", r.show());
    // The connection still serves requests after HEAD (no body was read as one).
    assert_eq!(c.push("q", "text/xml", &xml_batch(&["h-3"])).status, 200);
    assert_eq!(server.head_etag("q"), "h-3");
}

/// Pushes a message whose id holds CR LF and a header line, then checks that no response
/// (push, HEAD, pull) carries the injected header and that the connection still works.
fn assert_no_header_injection(content_type: &str, body: &str) {
    let server = start();
    let mut c = server.connect();
    let r = c.push("q", content_type, body);
    assert!(
        r.header("X-Injected").is_none(),
        "push: a message id became a response header: {}",
        r.show()
    );
    assert!(r.status == 200 || r.status == 400, "{}", r.show());
    let r = c.request("HEAD", "/qst/q", &[], b"");
    assert!(r.header("X-Injected").is_none(), "HEAD: {}", r.show());
    let r = c.pull("q", "");
    assert!(r.header("X-Injected").is_none(), "pull: {}", r.show());
    assert_eq!(c.push("q", "text/xml", &xml_batch(&["after"])).status, 200);
}

#[test]
fn a_json_id_with_line_breaks_cannot_inject_a_header() {
    assert_no_header_injection(
        "application/json",
        r#"[{"id":"evil\r\nX-Injected: json","body":"x"}]"#,
    );
}

#[test]
fn an_xml_id_with_line_breaks_cannot_inject_a_header() {
    assert_no_header_injection(
        "text/xml",
        &xml_doc(r#"<message id="evil&#13;&#10;X-Injected: xml"><body>x</body></message>"#),
    );
}
