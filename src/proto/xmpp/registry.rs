//! Who is online: every bound full JID and the session that holds it, shared by all workers,
//! so a `<message>` reaches its addressee's session on whatever worker it lives (through that
//! worker's mailbox, like any delivery).

use crate::sync::lock;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::hub::{Hub, Mail, WaiterRef};

/// Sessions by bare JID (`user@domain`), each with its resources.
#[derive(Default)]
pub struct Registry {
    online: Mutex<HashMap<String, Vec<(String, WaiterRef)>>>,
}

/// `user@domain/resource` → (`user@domain`, `Some(resource)`).
fn split(jid: &str) -> (&str, Option<&str>) {
    match jid.split_once('/') {
        Some((bare, res)) => (bare, Some(res)),
        None => (jid, None),
    }
}

impl Registry {
    /// Binds `full` to `me`. An older session holding the same full JID is told it was
    /// replaced.
    pub fn bind(&self, full: &str, me: WaiterRef, hub: &Hub) {
        let (bare, _) = split(full);
        let old = {
            let mut online = lock(&self.online);
            let sessions = online.entry(bare.to_string()).or_default();
            let old = sessions
                .iter()
                .position(|(j, _)| j == full)
                .map(|i| sessions.swap_remove(i).1);
            sessions.push((full.to_string(), me));
            old
        };
        if let Some(old) = old.filter(|o| *o != me) {
            hub.send(old.worker, Mail::Replaced { token: old.token });
        }
    }

    /// Releases `full` if `me` still holds it.
    pub fn unbind(&self, full: &str, me: WaiterRef) {
        let (bare, _) = split(full);
        let mut online = lock(&self.online);
        if let Some(sessions) = online.get_mut(bare) {
            sessions.retain(|(j, w)| !(j == full && *w == me));
            if sessions.is_empty() {
                online.remove(bare);
            }
        }
    }

    /// Sends a stanza to `to`: a full JID → that session; a bare JID → every session of the
    /// user. Returns how many sessions it went to (0: nobody online, dropped).
    pub fn route(&self, to: &str, stanza: &str, hub: &Hub) -> usize {
        let (bare, resource) = split(to);
        let targets: Vec<WaiterRef> = {
            let online = lock(&self.online);
            let Some(sessions) = online.get(bare) else {
                return 0;
            };
            sessions
                .iter()
                .filter(|(j, _)| resource.is_none() || j == to)
                .map(|(_, w)| *w)
                .collect()
        };
        // Rendered once, shared by every session it goes to.
        let stanza: Arc<[u8]> = Arc::from(stanza.as_bytes());
        for w in &targets {
            hub.send(
                w.worker,
                Mail::Stanza {
                    token: w.token,
                    stanza: stanza.clone(),
                },
            );
        }
        targets.len()
    }

    /// Sessions bound now.
    pub fn len(&self) -> usize {
        lock(&self.online).values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
