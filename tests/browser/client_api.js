// Phases of the tidings.js API check run by tests/browser_demo.rs in a demo page, after
// prelude.js. arguments[0] names the phase; arguments[1] carries its parameters. Each phase
// answers through done({ok, value}).
const [phase, p] = [arguments[0], arguments[1]];

if (phase === 'jsonp-open') {
  // A JSONP subscription; answers once its starting cursor is known.
  window.__jp = { got: [], errors: [], opened: null };
  window.__jp.sub = Tidings.subscribe({
    channel: p.channel,
    transport: 'jsonp',
    onOpen: (t) => {
      window.__jp.opened = t;
    },
    onMessage: (data, time) => window.__jp.got.push({ data, time }),
    onError: (e) => window.__jp.errors.push(e.message),
  });
  waitFor(() => window.__jp.opened, p.ms, () => ({ errors: window.__jp.errors }));
} else if (phase === 'jsonp-collect') {
  // Waits until the subscription delivered p.count messages.
  waitFor(() => window.__jp.got.length >= p.count, p.ms, () => ({ got: window.__jp.got, errors: window.__jp.errors }));
} else if (phase === 'jsonp-finish') {
  // Stops the subscription, publishes one message over JSONP, reports.
  const jp = window.__jp;
  jp.sub.stop();
  Tidings.publish({ channel: p.channel, message: { via: 'jsonp' }, transport: 'jsonp' }).then(
    (time) =>
      done({
        ok: true,
        value: {
          got: jp.got,
          errors: jp.errors,
          cursor: jp.sub.cursor,
          published: time,
          scripts: document.querySelectorAll('script[src*="callback="]').length,
          globals: Object.keys(window).filter((k) => k.startsWith('__tidings_')).length,
        },
      }),
    (e) => done({ ok: false, value: 'jsonp publish failed: ' + e.message })
  );
} else if (phase === 'missed') {
  // A subscriber starting before messages that retention dropped is told so, then gets
  // what is left, in order.
  const r = { missed: [], got: [] };
  const sub = Tidings.subscribe({
    channel: p.channel,
    since: 1,
    onMessage: (data, time) => r.got.push({ data, time }),
    onMissed: (info) => r.missed.push(info),
  });
  waitFor(
    () => r.got.length >= p.count && (sub.stop(), r),
    p.ms,
    () => r
  );
} else if (phase === 'backoff') {
  // Errors against a closed port: retried with growing, capped, jittered delays; stop()
  // ends it for good.
  const errs = [];
  const sub = Tidings.subscribe({
    url: p.url,
    minDelay: 20,
    maxDelay: 80,
    onMessage: () => {},
    onError: (e) =>
      errs.push({ attempt: e.attempt, retryIn: e.retryIn, fatal: e.fatal, status: e.status }),
  });
  const t0 = Date.now();
  (function poll() {
    if (errs.length >= 5) {
      sub.stop();
      const seen = errs.length;
      // Nothing more may come after stop(): look again a little later.
      return setTimeout(() => done({ ok: true, value: { errs, after: errs.length - seen } }), 300);
    }
    if (Date.now() - t0 > p.ms) return done({ ok: false, value: errs });
    setTimeout(poll, 10);
  })();
} else if (phase === 'fatal') {
  // A 400 (an empty channel name) cannot get better: reported once as fatal, then stopped.
  const errs = [];
  const states = [];
  Tidings.subscribe({
    channel: '',
    onMessage: () => {},
    onState: (s) => states.push(s),
    onError: (e) => errs.push({ status: e.status, fatal: e.fatal, retryIn: e.retryIn }),
  });
  const t0 = Date.now();
  (function poll() {
    if (states.includes('stopped')) {
      // No retry may follow: look again a little later.
      return setTimeout(() => done({ ok: true, value: { errs, states } }), 300);
    }
    if (Date.now() - t0 > p.ms) return done({ ok: false, value: { errs, states } });
    setTimeout(poll, 10);
  })();
} else {
  done({ ok: false, value: 'unknown phase ' + phase });
}
