// Prepended to every script the browser tests (tests/browser_support) run in a page (WebDriver
// "execute"), before the page's own readers: a bounded wait. `done` is the WebDriver callback
// of an async script (undefined in a sync one).
const done = arguments[arguments.length - 1];

/** Calls `done({ok, value})` once `check()` returns a truthy value, or after `ms` with
 *  `ok: false` and `snapshot()` so the Rust side can say what the page showed. */
function waitFor(check, ms, snapshot) {
  const t0 = Date.now();
  (function poll() {
    let v;
    try {
      v = check();
    } catch (e) {
      return done({ ok: false, value: 'check threw: ' + e });
    }
    if (v) return done({ ok: true, value: v });
    if (Date.now() - t0 > ms) return done({ ok: false, value: snapshot ? snapshot() : null });
    setTimeout(poll, 20);
  })();
}
