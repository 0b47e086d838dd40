// Drivers and readers of the nchan browser test (tests/browser_nchan.rs), run in its page (a
// test-only origin that loads the vendored NchanSubscriber.js). Each subscriber logs what it
// hears under a key in `window.nchanSubs`; the Rust side reads the logs with `nchanLog`.

/** Starts `new NchanSubscriber(url, {subscriber: transport})`, logging its messages (text,
 *  id, content type) and its connect/disconnect/error events under `key`. */
function nchanStart(key, url, transport) {
  window.nchanSubs = window.nchanSubs || {};
  const log = { msgs: [], events: [], ends: 0 };
  const sub = new NchanSubscriber(url, { subscriber: transport });
  sub.on('message', (m, meta) => {
    log.msgs.push({ text: String(m), id: meta.id || null, ct: meta['content-type'] || null });
  });
  sub.on('connect', () => log.events.push('connect'));
  sub.on('disconnect', () => {
    log.events.push('disconnect');
    log.ends += 1;
  });
  sub.on('error', (code) => {
    log.events.push('error ' + code);
    log.ends += 1;
  });
  sub.start();
  window.nchanSubs[key] = { sub, log, transport: sub.transport && sub.transport.name };
  return window.nchanSubs[key].transport;
}

/** The log of the subscriber `key`. */
function nchanLog(key) {
  const s = (window.nchanSubs || {})[key];
  return s ? s.log : null;
}

/** Opens the browser's own EventSource on `url`, logging `message` and `tick` events (data,
 *  lastEventId) and errors under `key`. */
function esStart(key, url) {
  window.esLogs = window.esLogs || {};
  const log = { events: [], errors: 0, opens: 0 };
  const es = new EventSource(url);
  const record = (evt) => log.events.push({ type: evt.type, data: evt.data, id: evt.lastEventId });
  es.addEventListener('message', record);
  es.addEventListener('tick', record);
  es.onopen = () => { log.opens += 1; };
  es.onerror = () => { log.errors += 1; };
  window.esLogs[key] = log;
}

function esLog(key) {
  return (window.esLogs || {})[key] || null;
}
