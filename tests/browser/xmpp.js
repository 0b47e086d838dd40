// Readers of the XMPP demo page (web/xmpp.html) for tests/browser_xmpp.rs, run after
// prelude.js.

/** The login state: the status dot's state and the bound JID. */
function loginState() {
  const s = document.querySelector('#status');
  return { state: s.dataset.state, jid: s.dataset.jid || null, text: s.textContent };
}

/** The item list of the last get-item: its query, each row, and the decoded answer. */
function itemList() {
  const list = document.querySelector('#items');
  return {
    query: list.dataset.query || null,
    items: Array.from(list.querySelectorAll('li.item')).map((li) => ({
      path: li.dataset.path,
      kind: li.dataset.kind,
      key: li.dataset.key,
      folder: li.classList.contains('folder'),
      title: li.querySelector('.title').textContent,
    })),
    answer: document.querySelector('#answer').textContent,
  };
}

/** The subscriptions the page holds. */
function subscriptions() {
  return Array.from(document.querySelectorAll('#subs li')).map((li) => ({
    node: li.dataset.node,
    subid: li.dataset.subid,
    state: li.dataset.state,
  }));
}

/** The PubSub events shown, oldest first. */
function events() {
  return Array.from(document.querySelectorAll('#events li.event')).map((li) => ({
    node: li.dataset.node,
    id: li.dataset.id,
    from: li.dataset.from,
    seq: li.dataset.seq || null,
    when: li.dataset.when || null,
    text: li.querySelector('.text').textContent,
  }));
}

/** The notes (errors) the page showed. */
function notes() {
  return Array.from(document.querySelectorAll('#notes li')).map((li) => li.textContent);
}

/** Everything at once, for failure messages. */
function pageState() {
  return { login: loginState(), items: itemList(), subs: subscriptions(), events: events(), notes: notes() };
}
