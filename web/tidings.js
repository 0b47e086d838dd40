/*
 * tidings.js: a browser client for the tidings Simple Comet Protocol (/comet, PROTOCOLS.md 2).
 *
 *   const sub = Tidings.subscribe({ url: '/comet', channel: 'chat',
 *     onMessage: (data, time) => console.log(time, data),
 *     onError: (err) => console.warn('retrying in', err.retryIn, 'ms:', err.message) });
 *   Tidings.publish({ url: '/comet', channel: 'chat', message: { text: 'hi' } }).then((time) => {});
 *   sub.stop(); // no callback runs after this
 *
 * subscribe(options) starts with `sync` (or at `since`) and then loops `get` with the cursor
 * the server returns. Every message is delivered once, oldest first: the cursor only moves
 * forward, and a message whose time is not after it is dropped as a repeat. After an error it
 * retries with capped exponential backoff and jitter, from the same cursor, so nothing is
 * skipped; a 4xx answer (other than 408 and 429) cannot get better and stops it.
 *
 * Options of subscribe (only onMessage is required):
 *   url            comet endpoint, default '/comet' (another origin works: the server sends CORS)
 *   channel        default 'test'
 *   onMessage(data, time)  data is the parsed JSON a publisher sent, or its text
 *   onOpen(time)   once, when the starting cursor is known: nothing published later is missed
 *   onMissed({after})      the server's retention dropped messages after cursor `after`
 *   onError(err)   err.status (HTTP status, 0 if unknown), err.attempt, err.retryIn (ms or
 *                  null), err.fatal; call stop() here to give up
 *   onState(state) 'connecting', 'live', 'retrying' or 'stopped'
 *   since          start after this time instead of now (no sync)
 *   transport      'fetch' (default when available) or 'jsonp' (script tags, any browser)
 *   minDelay, maxDelay     backoff bounds in ms (default 500, 30000)
 *   requestTimeout ms before a request is abandoned and retried (default 60000: above the
 *                  server's long-poll timeout)
 *
 * publish({url, channel, message, transport}) sends one `put` (a string as is, anything
 * else as JSON) and resolves to the message's time. It does not retry: a failed request may
 * still have been stored.
 */
(function (root) {
  'use strict';

  const DEFAULTS = {
    url: '/comet',
    channel: 'test',
    transport: null,
    minDelay: 500,
    maxDelay: 30000,
    requestTimeout: 60000,
    since: null,
  };

  /** An error of a comet request; `status` is the HTTP status, 0 when there is none. */
  class TidingsError extends Error {
    constructor(message, status) {
      super(message);
      this.name = 'TidingsError';
      this.status = status || 0;
    }
  }

  let jsonpCount = 0;

  function encodeParams(params) {
    return Object.keys(params)
      .filter((k) => params[k] !== undefined && params[k] !== null)
      .map((k) => encodeURIComponent(k) + '=' + encodeURIComponent(String(params[k])))
      .join('&');
  }

  function withQuery(url, query) {
    return url + (url.indexOf('?') >= 0 ? '&' : '?') + query;
  }

  function pickTransport(asked) {
    if (asked === 'fetch' || asked === 'jsonp') return asked;
    if (asked) throw new TypeError('tidings: transport must be "fetch" or "jsonp"');
    return typeof root.fetch === 'function' && typeof root.AbortController === 'function'
      ? 'fetch'
      : 'jsonp';
  }

  /**
   * One request over fetch: GET with the parameters in the query string, or a form POST
   * (a "simple" CORS request: no preflight). Returns {promise, cancel}.
   */
  function fetchRequest(url, params, timeoutMs, post) {
    const ctrl = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      ctrl.abort();
    }, timeoutMs);
    const init = post
      ? { method: 'POST', body: new URLSearchParams(params), cache: 'no-store', signal: ctrl.signal }
      : { method: 'GET', cache: 'no-store', signal: ctrl.signal };
    const target = post ? url : withQuery(url, encodeParams(params));
    const promise = (async () => {
      try {
        const res = await root.fetch(target, init);
        if (!res.ok) {
          const text = await res.text().catch(() => '');
          throw new TidingsError(('HTTP ' + res.status + ' ' + text).trim(), res.status);
        }
        try {
          return await res.json();
        } catch (e) {
          throw new TidingsError('answer is not JSON', res.status);
        }
      } catch (e) {
        if (timedOut) throw new TidingsError('no answer within ' + timeoutMs + ' ms', 0);
        if (e instanceof TidingsError) throw e;
        throw new TidingsError('network error: ' + (e && e.message ? e.message : e), 0);
      } finally {
        clearTimeout(timer);
      }
    })();
    return { promise, cancel: () => ctrl.abort() };
  }

  /**
   * One request over JSONP: a script tag calling a global function with a unique name.
   * The tag is removed and the name released when the request ends, however it ends.
   * Returns {promise, cancel}.
   */
  function jsonpRequest(url, params, timeoutMs) {
    const doc = root.document;
    if (!doc) throw new TypeError('tidings: the jsonp transport needs a document');
    jsonpCount += 1;
    // Matches the server's rule ^[A-Za-z_$][A-Za-z0-9_$.]{0,127}$.
    const name = '__tidings_' + Math.random().toString(36).slice(2, 10) + '_' + jsonpCount;
    const script = doc.createElement('script');
    let settle = null;
    let timer = null;
    const promise = new Promise((resolve, reject) => {
      settle = (err, value) => {
        if (!settle) return;
        settle = null;
        clearTimeout(timer);
        script.onerror = script.onload = null;
        if (script.parentNode) script.parentNode.removeChild(script);
        if (err) {
          // The script may still arrive: swallow that late call, then forget the name.
          root[name] = function () {
            delete root[name];
          };
          reject(err);
        } else {
          delete root[name];
          resolve(value);
        }
      };
    });
    root[name] = (value) => settle && settle(null, value);
    script.onerror = () => settle && settle(new TidingsError('JSONP request failed', 0));
    // A script that loaded without calling back (it runs before its load event).
    script.onload = () => settle && settle(new TidingsError('JSONP answer did not call back', 0));
    timer = setTimeout(
      () => settle && settle(new TidingsError('no answer within ' + timeoutMs + ' ms', 0)),
      timeoutMs
    );
    script.async = true;
    script.src = withQuery(url, encodeParams(Object.assign({}, params, { callback: name })));
    (doc.head || doc.documentElement).appendChild(script);
    return { promise, cancel: () => settle && settle(new TidingsError('cancelled', 0)) };
  }

  function request(transport, url, params, timeoutMs, post) {
    return transport === 'jsonp'
      ? jsonpRequest(url, params, timeoutMs)
      : fetchRequest(url, params, timeoutMs, post);
  }

  function timeOf(answer) {
    if (!answer || !Number.isSafeInteger(answer.time) || answer.time < 0) {
      throw new TidingsError('malformed answer: no time', 0);
    }
    return answer.time;
  }

  /** Calls a user callback; its exception is reported asynchronously and does not stop us. */
  function call(fn, ...args) {
    if (typeof fn !== 'function') return;
    try {
      fn(...args);
    } catch (e) {
      setTimeout(() => {
        throw e;
      }, 0);
    }
  }

  /**
   * Subscribes to a channel (options above). Returns {stop(), cursor, channel}: `cursor` is
   * the time of the last message delivered (or the starting time).
   */
  function subscribe(options) {
    const o = Object.assign({}, DEFAULTS, options);
    if (typeof o.onMessage !== 'function') {
      throw new TypeError('tidings: subscribe needs an onMessage function');
    }
    const transport = pickTransport(o.transport);
    const channel = String(o.channel);
    let cursor = null;
    if (o.since !== null && o.since !== undefined) {
      cursor = Number(o.since);
      if (!Number.isSafeInteger(cursor) || cursor < 0) {
        throw new TypeError('tidings: since must be a non-negative integer');
      }
    }
    let stopped = false;
    let opened = false;
    let attempt = 0;
    let timer = null;
    let inflight = null;
    let state = null;

    function setState(s) {
      if (s !== state) {
        state = s;
        call(o.onState, s);
      }
    }

    function open() {
      if (!opened) {
        opened = true;
        call(o.onOpen, cursor);
      }
    }

    function deliver(answer) {
      if (!answer || !Array.isArray(answer.messages)) {
        throw new TidingsError('malformed answer: no messages', 0);
      }
      const time = timeOf(answer);
      if (answer.missed === true) call(o.onMissed, { after: cursor });
      let delivered = false;
      for (const m of answer.messages) {
        if (stopped) return;
        if (!m || !Number.isSafeInteger(m.time)) continue;
        if (m.time <= cursor) continue; // already delivered
        cursor = m.time;
        delivered = true;
        call(o.onMessage, m.data, m.time);
      }
      // An empty answer (a timeout) carries the channel clock: nothing can come before it.
      // With messages, the cursor is the last one delivered, whatever the answer says.
      if (!delivered && answer.messages.length === 0 && time > cursor) cursor = time;
    }

    async function step() {
      timer = null;
      if (stopped) return;
      try {
        if (cursor === null) {
          inflight = request(transport, o.url, { method: 'sync', channel }, o.requestTimeout);
          const answer = await inflight.promise;
          if (stopped) return;
          cursor = timeOf(answer);
        } else {
          open();
          if (stopped) return;
          inflight = request(
            transport,
            o.url,
            { method: 'get', channel, time: cursor },
            o.requestTimeout
          );
          const answer = await inflight.promise;
          if (stopped) return;
          deliver(answer);
        }
        inflight = null;
        attempt = 0;
        if (stopped) return;
        setState('live');
        open();
        schedule(0);
      } catch (err) {
        inflight = null;
        if (stopped) return;
        fail(err instanceof TidingsError ? err : new TidingsError(String(err), 0));
      }
    }

    function backoff(n) {
      const cap = Math.min(o.maxDelay, o.minDelay * Math.pow(2, n - 1));
      return Math.round(cap / 2 + (Math.random() * cap) / 2);
    }

    function fail(err) {
      attempt += 1;
      const s = err.status;
      err.fatal = s >= 400 && s < 500 && s !== 408 && s !== 429;
      err.attempt = attempt;
      err.retryIn = err.fatal ? null : backoff(attempt);
      if (err.fatal) stopped = true;
      setState(err.fatal ? 'stopped' : 'retrying');
      call(o.onError, err);
      if (!stopped) schedule(err.retryIn);
    }

    function schedule(delay) {
      timer = setTimeout(step, delay);
    }

    function stop() {
      if (stopped && state === 'stopped') return;
      stopped = true;
      if (timer !== null) clearTimeout(timer);
      timer = null;
      if (inflight) inflight.cancel();
      inflight = null;
      setState('stopped');
    }

    setState('connecting');
    schedule(0);
    return {
      stop,
      get cursor() {
        return cursor;
      },
      channel,
    };
  }

  /**
   * Publishes one message (`put`). A string is sent as it is, anything else as JSON.
   * Resolves to the message's time; rejects with a TidingsError.
   */
  function publish(options) {
    const o = Object.assign({}, DEFAULTS, options);
    if (o.message === undefined) {
      return Promise.reject(new TypeError('tidings: publish needs a message'));
    }
    const message = typeof o.message === 'string' ? o.message : JSON.stringify(o.message);
    let transport;
    try {
      transport = pickTransport(o.transport);
    } catch (e) {
      return Promise.reject(e);
    }
    const params = { method: 'put', channel: String(o.channel), message };
    return request(transport, o.url, params, o.requestTimeout, true).promise.then(timeOf);
  }

  const Tidings = { subscribe, publish, TidingsError, version: '1.0.0' };
  root.Tidings = Tidings;
  if (typeof module === 'object' && module && module.exports) module.exports = Tidings;
})(typeof globalThis !== 'undefined' ? globalThis : typeof self !== 'undefined' ? self : this);
