// Prepended to every script tests/browser_demo.rs runs in a demo page (WebDriver
// "execute"): small readers of the page and a bounded wait. `done` is the WebDriver callback
// of an async script (undefined in a sync one).
const done = arguments[arguments.length - 1];

/** The chat lines of the page, oldest first. */
function chatLines() {
  return Array.from(document.querySelectorAll('#log .msg')).map((li) => ({
    from: li.querySelector('.from').textContent,
    text: li.querySelector('.text').textContent,
    time: Number(li.dataset.time),
    foreign: li.classList.contains('foreign'),
    mine: li.classList.contains('mine'),
  }));
}

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
