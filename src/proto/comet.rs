//! The Simple Comet Protocol (PROTOCOLS.md 2), mounted at `/comet`: `put`, `get` (a
//! long-poll) and `sync`, answered in JSON or JSONP.

use std::sync::Arc;

use super::{channel_name, Action, Ctx, Park, ParkKind, Reply, Request};
use crate::hub::{Draft, Format, Message, Origin, Read};

/// The channel of a request that names none.
pub const DEFAULT_CHANNEL: &str = "test";

/// Checks a JSONP callback name against `^[A-Za-z_$][A-Za-z0-9_$.]{0,127}$`.
pub fn valid_callback(name: &[u8]) -> bool {
    match name.split_first() {
        Some((first, rest)) => {
            (first.is_ascii_alphabetic() || *first == b'_' || *first == b'$')
                && rest.len() <= 127
                && rest
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'$' | b'.'))
        }
        None => false,
    }
}

/// `{"time":t,"data":d}` for a message, made once per message and shared: `d` is the body
/// itself when it is valid JSON, and a JSON string of it otherwise. Always UTF-8.
pub fn render(msg: &Message) -> Arc<[u8]> {
    msg.rendered(Format::CometJson, |msg| {
        let mut s = String::with_capacity(msg.body.len() + 40);
        s.push_str("{\"time\":");
        s.push_str(itoa::Buffer::new().format(msg.seq));
        s.push_str(",\"data\":");
        let is_json = serde_json::from_slice::<serde::de::IgnoredAny>(&msg.body).is_ok();
        match std::str::from_utf8(&msg.body) {
            Ok(text) if is_json => s.push_str(text.trim()),
            _ => {
                let text = String::from_utf8_lossy(&msg.body);
                s.push_str(&serde_json::Value::String(text.into_owned()).to_string());
            }
        }
        s.push('}');
        Some(Arc::from(s.into_bytes()))
    })
    .unwrap_or_else(|| Arc::from(&b"null"[..]))
}

/// The body of a `get` answer: `{"time":S,"messages":[…]}` plus `"missed":true` when the
/// cursor fell behind retention.
pub fn get_body(read: &Read) -> Vec<u8> {
    let time = read.messages.last().map_or(read.clock, |m| m.seq);
    let mut s = Vec::with_capacity(64 + read.messages.len() * 64);
    s.extend_from_slice(b"{\"time\":");
    s.extend_from_slice(itoa::Buffer::new().format(time).as_bytes());
    s.extend_from_slice(b",\"messages\":[");
    for (i, m) in read.messages.iter().enumerate() {
        if i > 0 {
            s.push(b',');
        }
        s.extend_from_slice(&render(m));
    }
    s.push(b']');
    if read.missed {
        s.extend_from_slice(b",\"missed\":true");
    }
    s.push(b'}');
    s
}

/// A JSON answer, wrapped as `callback(json);` for JSONP.
pub fn answer(json: Vec<u8>, callback: Option<&str>) -> Reply {
    let reply = match callback {
        Some(cb) => {
            let mut body = Vec::with_capacity(cb.len() + json.len() + 3);
            body.extend_from_slice(cb.as_bytes());
            body.push(b'(');
            body.extend_from_slice(&json);
            body.extend_from_slice(b");");
            Reply::new(200, "application/javascript; charset=utf-8", body)
        }
        None => Reply::new(200, "application/json", json),
    };
    reply.header("Cache-Control", "no-cache")
}

fn time_json(t: u64) -> Vec<u8> {
    format!("{{\"time\":{t}}}").into_bytes()
}

/// `/comet?method=put|get|sync&channel=…`: answers now, or parks a `get`.
pub fn handle(ctx: &Ctx<'_>, req: &Request<'_>) -> Action {
    match decide(ctx, req) {
        Ok(a) => a,
        Err(r) => Action::Reply(r),
    }
}

fn decide(ctx: &Ctx<'_>, req: &Request<'_>) -> Result<Action, Reply> {
    let callback = match req.param("callback") {
        None => None,
        Some(cb) if valid_callback(&cb) => Some(String::from_utf8_lossy(&cb).into_owned()),
        Some(_) => return Err(Reply::text(400, "invalid callback name")),
    };
    let channel = match req.param("channel") {
        None => DEFAULT_CHANNEL.to_string(),
        Some(raw) => channel_name(&raw)?.to_string(),
    };
    ctx.authorize(&channel, req)?;
    let method = req.param("method");
    let cb = callback.as_deref();
    match method.as_deref().unwrap_or(b"sync") {
        b"put" => {
            let message = req
                .param("message")
                .ok_or_else(|| Reply::text(400, "message is required"))?;
            // Comet delivers JSON: bytes that are not UTF-8 could only reach a client as
            // replacement characters, so they are refused rather than stored changed.
            if std::str::from_utf8(&message).is_err() {
                return Err(Reply::text(400, "message is not UTF-8"));
            }
            if message.len() > ctx.config.max_message_bytes {
                return Err(Reply::text(413, "message too large"));
            }
            let stored = ctx
                .publish(
                    &channel,
                    vec![Draft::with_body(message.into_owned())],
                    Origin::Comet,
                    false,
                )
                .map_err(Reply::hub_error)?;
            if ctx.hub.shared_in_redis(&channel) {
                // The time is the seq Redis gives the message.
                let callback = callback.clone();
                ctx.then.set(Some(Box::new(move |a| {
                    Action::Reply(answer(time_json(a.seq()), callback.as_deref()))
                })));
            }
            let t = stored.last().map_or(0, |m| m.seq);
            Ok(Action::Reply(answer(time_json(t), cb)))
        }
        b"sync" if ctx.hub.shared_in_redis(&channel) => {
            let to = ctx.waiting_connection()?;
            ctx.hub.sync_redis(&channel, to).map_err(Reply::hub_error)?;
            let callback = callback.clone();
            Ok(Action::Reply(ctx.redis_then(Box::new(move |a| {
                Action::Reply(answer(time_json(a.seq()), callback.as_deref()))
            }))))
        }
        b"sync" => {
            let t = ctx.hub.sync(&channel).map_err(Reply::hub_error)?;
            Ok(Action::Reply(answer(time_json(t), cb)))
        }
        b"get" => {
            let cursor = match req.param("time") {
                None => 0,
                Some(t) => std::str::from_utf8(&t)
                    .ok()
                    .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or_else(|| Reply::text(400, "time must be a non-negative integer"))?,
            };
            let park = Park {
                channel,
                timeout: ctx.config.long_poll_timeout,
                kind: ParkKind::Comet { cursor, callback },
            };
            match resume(ctx, &park, false) {
                Some(reply) => Ok(Action::Reply(reply)),
                None => Ok(Action::Park(park)),
            }
        }
        _ => Err(Reply::text(400, "unknown method: use put, get or sync")),
    }
}

/// Answers a parked `get` if its channel has messages after its cursor, or with an empty
/// list at its timeout. `None`: keep waiting.
pub fn resume(ctx: &Ctx<'_>, park: &Park, timed_out: bool) -> Option<Reply> {
    let ParkKind::Comet { cursor, callback } = &park.kind else {
        return None;
    };
    let read = ctx
        .hub
        .read(&park.channel, *cursor, ctx.config.comet_max_messages);
    if read.messages.is_empty() && !read.missed && !timed_out {
        return None;
    }
    let read = if read.clock == 0 && read.messages.is_empty() {
        // A channel that does not exist yet: answer with the clock `sync` would give.
        Read {
            clock: ctx.hub.sync(&park.channel).unwrap_or(*cursor),
            ..read
        }
    } else {
        read
    };
    Some(answer(get_body(&read), callback.as_deref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Draft;

    #[test]
    fn callback_rule() {
        for ok in ["cb", "_x", "$", "jQuery123_456.cb", "a.b.c"] {
            assert!(valid_callback(ok.as_bytes()), "{ok}");
        }
        let long = format!("a{}", "b".repeat(127));
        assert!(valid_callback(long.as_bytes()));
        let too_long = format!("a{}", "b".repeat(128));
        for bad in [
            "",
            "1a",
            "a-b",
            "alert(1)",
            "a;b",
            "a b",
            ".a",
            too_long.as_str(),
        ] {
            assert!(!valid_callback(bad.as_bytes()), "{bad}");
        }
    }

    fn text(bytes: &[u8]) -> &str {
        std::str::from_utf8(bytes).unwrap()
    }

    fn msg(seq: u64, body: &str) -> Arc<Message> {
        Arc::new(Message::new(
            seq,
            "i".into(),
            0,
            Origin::Comet,
            Draft::with_body(body),
        ))
    }

    #[test]
    fn data_is_json_or_a_string() {
        assert_eq!(
            text(&render(&msg(5, r#"{"a":[1,2]}"#))),
            r#"{"time":5,"data":{"a":[1,2]}}"#
        );
        assert_eq!(text(&render(&msg(6, "123"))), r#"{"time":6,"data":123}"#);
        assert_eq!(
            text(&render(&msg(7, "hello \"you\""))),
            r#"{"time":7,"data":"hello \"you\""}"#
        );
        assert_eq!(
            text(&render(&msg(8, "{broken"))),
            r#"{"time":8,"data":"{broken"}"#
        );
        assert_eq!(
            text(&render(&msg(9, "héllo"))),
            "{\"time\":9,\"data\":\"héllo\"}"
        );
    }

    #[test]
    fn get_bodies() {
        let read = Read {
            messages: vec![msg(3, "1"), msg(4, "\"x\"")],
            clock: 9,
            missed: true,
        };
        assert_eq!(
            text(&get_body(&read)),
            r#"{"time":4,"messages":[{"time":3,"data":1},{"time":4,"data":"x"}],"missed":true}"#
        );
        let empty = Read {
            messages: vec![],
            clock: 9,
            missed: false,
        };
        assert_eq!(text(&get_body(&empty)), r#"{"time":9,"messages":[]}"#);
    }

    #[test]
    fn jsonp_wraps() {
        let r = answer(b"{\"time\":1}".to_vec(), Some("cb"));
        assert_eq!(&*r.body, b"cb({\"time\":1});");
        assert!(r.content_type.starts_with("application/javascript"));
    }
}
