// Readers of the status page (web/status.html) for tests/browser_status.rs, run after
// prelude.js.

/** What the page shows now: its figures, how it gets them, and its published-rate chart. */
function statusView() {
  const text = (id) => document.getElementById(id).textContent;
  const value = (key) => document.getElementById('f-' + key).dataset.value;
  const chart = document.getElementById('c-published_per_s');
  return {
    samples: Number(document.body.dataset.samples || 0),
    transport: document.body.dataset.transport || null,
    state: document.getElementById('state').dataset.state,
    version: text('version'),
    http: text('http'),
    xmpp: text('xmpp'),
    uptime: text('uptime'),
    open: Number(value('open')),
    memory: text('f-resident_bytes'),
    published: Number(document.getElementById('s-published_per_s').dataset.value),
    publishedText: text('s-published_per_s'),
    chartPoints: Number(chart.dataset.points),
    chartMax: Number(chart.dataset.max),
    chartLine: chart.querySelector('polyline').getAttribute('points'),
  };
}
