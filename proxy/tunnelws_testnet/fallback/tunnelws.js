/* tunnelws.js: the browser's WebSocket API, native when the network lets a
 * WebSocket through, else over the tunnelws HTTP fallback (fetch streaming,
 * or long-polling behind a buffering proxy). Protocol: docs/fallback-protocol.md.
 *
 *   const ws = new TunnelWebSocket("ws://host/chat", ["chat.v2"]);
 *   ws.onmessage = (event) => console.log(event.data, ws.transport);
 *
 * A third argument takes {fallback: "auto" | "never" | "only", nativeTimeout: ms}.
 * After open, ws.transport is "websocket" or "fallback" and ws.fallbackReason
 * says why the native attempt was given up. No dependencies; one file.
 */
(function (global) {
  "use strict";

  const VERSION = 1;
  const MARKER = "_tunnelws";
  const NativeWebSocket = global.WebSocket;
  const STATES = { CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 };

  function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  function bytesToBase64(bytes) {
    let binary = "";
    for (let i = 0; i < bytes.length; i += 0x8000) {
      binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    return btoa(binary);
  }

  function base64ToBytes(text) {
    const binary = atob(text);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes;
  }

  function utf8Length(text) {
    return new TextEncoder().encode(text).length;
  }

  // The fallback's base URL for a WebSocket URL: ws://h/chat?x -> http://h/chat/_tunnelws/1/
  function fallbackBase(url) {
    const http = new URL(url);
    http.protocol = http.protocol === "wss:" ? "https:" : "http:";
    const path = http.pathname.replace(/\/+$/, "");
    return { base: http.origin + path + "/" + MARKER + "/" + VERSION + "/", query: http.search };
  }

  // Server-sent events, as the HTML standard reads them (enough of it for
  // this protocol: event, data, id; CR, LF and CRLF line ends).
  class EventParser {
    constructor(onEvent) {
      this.onEvent = onEvent;
      this.buffer = "";
      this.reset();
    }
    reset() {
      this.type = "";
      this.data = [];
      this.id = null;
    }
    feed(text) {
      this.buffer += text;
      const lines = this.buffer.split(/\r\n|\r|\n/);
      // A trailing CR may be the first half of a CRLF: keep it for later.
      this.buffer = lines.pop();
      if (this.buffer === "" && text.endsWith("\r")) this.buffer = "\r";
      for (const line of lines) this.line(line);
    }
    line(line) {
      if (line === "\r") return;
      if (line === "") {
        if (this.data.length) this.onEvent(this.type || "message", this.data.join("\n"), this.id);
        this.reset();
        return;
      }
      if (line.startsWith(":")) return;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") this.type = value;
      else if (field === "data") this.data.push(value);
      else if (field === "id") this.id = value;
    }
  }

  class TunnelWebSocket extends EventTarget {
    constructor(url, protocols, options) {
      super();
      const parsed = new URL(url, global.location ? global.location.href : undefined);
      if (parsed.protocol === "http:") parsed.protocol = "ws:";
      if (parsed.protocol === "https:") parsed.protocol = "wss:";
      if (parsed.protocol !== "ws:" && parsed.protocol !== "wss:") {
        throw new DOMException("The URL's scheme must be ws or wss", "SyntaxError");
      }
      if (parsed.hash) throw new DOMException("The URL contains a fragment", "SyntaxError");
      this.url = parsed.href;
      this._protocols = protocols === undefined ? [] :
        (typeof protocols === "string" ? [protocols] : Array.from(protocols));
      this._options = Object.assign(
        { fallback: "auto", nativeTimeout: 3000, openTimeout: 10000 }, options || {});
      this._state = STATES.CONNECTING;
      this._binaryType = "blob";
      this.protocol = "";
      this.extensions = "";
      this.transport = null;
      this.fallbackReason = null;
      this.downstreamMode = null;
      this._buffered = 0;
      this._handlers = {};
      this._native = null;
      this._sendChain = Promise.resolve();
      if (this._options.fallback === "only" || typeof NativeWebSocket !== "function") {
        this.fallbackReason = typeof NativeWebSocket === "function"
          ? "fallback only" : "no WebSocket in this browser";
        this._startFallback();
      } else {
        this._tryNative();
      }
    }

    get readyState() { return this._state; }
    get bufferedAmount() {
      return this._native && this.transport === "websocket" ? this._native.bufferedAmount : this._buffered;
    }
    get binaryType() { return this._binaryType; }
    set binaryType(value) {
      if (value !== "blob" && value !== "arraybuffer") return;
      this._binaryType = value;
      if (this._native) this._native.binaryType = value;
    }

    // -- events ------------------------------------------------------------

    _fire(event) {
      const handler = this._handlers[event.type];
      if (typeof handler === "function") handler.call(this, event);
      this.dispatchEvent(event);
    }

    _fireClose(code, reason, wasClean) {
      if (this._state === STATES.CLOSED) return;
      this._state = STATES.CLOSED;
      this._fire(new CloseEvent("close", { code, reason, wasClean }));
    }

    // -- native ------------------------------------------------------------

    _tryNative() {
      let native;
      try {
        native = new NativeWebSocket(this.url, this._protocols);
      } catch (err) {
        throw err;  // a bad URL or protocol list: the same error as WebSocket's
      }
      this._native = native;
      native.binaryType = this._binaryType;
      let opened = false;
      const giveUp = (why) => {
        if (opened || this._native !== native) return;
        this._native = null;
        native.onopen = native.onmessage = native.onclose = native.onerror = null;
        try { native.close(); } catch (err) { /* already closing */ }
        if (this._options.fallback === "never" || this._state !== STATES.CONNECTING) {
          this._fire(new Event("error"));
          this._fireClose(1006, "", false);
          return;
        }
        this.fallbackReason = why;
        this._startFallback();
      };
      const timer = setTimeout(() => giveUp("the native WebSocket did not open within " +
        this._options.nativeTimeout + " ms"), this._options.nativeTimeout);
      native.onopen = () => {
        clearTimeout(timer);
        opened = true;
        this.transport = "websocket";
        this.protocol = native.protocol;
        this.extensions = native.extensions;
        this._state = STATES.OPEN;
        this._fire(new Event("open"));
      };
      native.onmessage = (event) => this._fire(new MessageEvent("message", {
        data: event.data, origin: event.origin }));
      native.onerror = () => { if (opened) this._fire(new Event("error")); };
      native.onclose = (event) => {
        clearTimeout(timer);
        if (!opened) {
          giveUp("the native WebSocket failed (close code " + event.code + ")");
          return;
        }
        if (this._state !== STATES.CLOSED) {
          this._state = STATES.CLOSED;
          this._fire(new CloseEvent("close", {
            code: event.code, reason: event.reason, wasClean: event.wasClean }));
        }
      };
    }

    // -- the fallback --------------------------------------------------------

    async _startFallback() {
      this.transport = "fallback";
      const { base, query } = fallbackBase(this.url);
      this._base = base;
      this._sent = [];          // unacknowledged upstream messages, in order
      this._nextSeq = 1;
      this._upAcked = 0;
      this._received = 0;       // highest downstream seq taken
      this._ackedDown = 0;      // highest downstream seq we acknowledged
      this._posting = false;
      this._ackTimer = null;
      this._closeSeq = null;
      this._remoteClose = null;
      this._abort = new AbortController();
      let answer;
      try {
        answer = await this._open(base + "open" + query);
      } catch (err) {
        this._fail("could not open a fallback session: " + err.message);
        return;
      }
      if (this._state !== STATES.CONNECTING) {
        this._abort.abort();  // close() was called meanwhile
        return;
      }
      const limits = answer.limits || {};
      this._limits = {
        heartbeat: limits.heartbeat || 5, window: limits.window || 256,
        maxBatch: limits.max_batch_bytes || 1048576, expires: limits.expires || 30,
        maxMessage: limits.max_message_size || 16777216,
      };
      this._session = answer.session;
      this.protocol = answer.subprotocol || "";
      this._lastHeard = Date.now();
      this._state = STATES.OPEN;
      this._fire(new Event("open"));
      this._downLoop();
      this._flush();
    }

    // A broken answer is retried (a session opened by a lost answer expires
    // unused); a refusal is not.
    async _open(url) {
      const started = Date.now();
      let backoff = 100;
      for (;;) {
        let response;
        try {
          response = await fetch(url, {
            method: "POST",
            headers: { "Content-Type": "application/json" },
            body: JSON.stringify({ version: VERSION, subprotocols: this._protocols, headers: [] }),
            credentials: "include",
            cache: "no-store",
            signal: this._abort.signal,
          });
          if (response.status === 201) {
            const answer = await response.json();
            if (answer.version !== VERSION || typeof answer.session !== "string") {
              throw new TypeError("not a tunnelws fallback server");
            }
            return answer;
          }
        } catch (err) {
          if (this._abort.signal.aborted || !(err instanceof TypeError) ||
              err.message === "not a tunnelws fallback server" ||
              Date.now() - started > this._options.openTimeout) {
            throw err;
          }
          await sleep(backoff);
          backoff = Math.min(backoff * 2, 2000);
          continue;
        }
        throw new Error("open answered " + response.status);
      }
    }

    _url(endpoint) {
      return this._base + this._session + "/" + endpoint;
    }

    _fail(why) {
      this.fallbackError = why;
      if (this._abort) this._abort.abort();
      clearTimeout(this._ackTimer);
      if (this._state !== STATES.CLOSED) this._fire(new Event("error"));
      this._fireClose(1006, "", false);
    }

    _finished() {
      return this._state === STATES.CLOSED;
    }

    _checkAlive() {
      if (Date.now() - this._lastHeard > this._limits.expires * 1000) {
        this._fail("the fallback session has not answered for " + this._limits.expires + " s");
        return false;
      }
      return true;
    }

    async _downLoop() {
      let mode = "stream";
      let triedStreaming = false;
      let backoff = 100;
      while (!this._finished()) {
        const poll = mode === "poll";
        this.downstreamMode = mode;
        const url = this._url("down") + "?last=" + this._received + (poll ? "&mode=poll" : "");
        const request = new AbortController();
        const abortAll = () => request.abort();
        this._abort.signal.addEventListener("abort", abortAll);
        let gotByte = false;
        let buffered = false;
        let timer = null;
        if (!poll && !triedStreaming) {
          // No byte of the first stream in time: something buffers responses.
          timer = setTimeout(() => { if (!gotByte) { buffered = true; request.abort(); } },
            Math.min(this._limits.heartbeat, 3) * 1000);
        }
        try {
          const response = await fetch(url, {
            headers: { Accept: "text/event-stream" }, credentials: "include",
            cache: "no-store", signal: request.signal,
          });
          if (response.status === 404) { this._fail("the fallback session is gone"); return; }
          if (response.status !== 200) throw new Error("down answered " + response.status);
          const parser = new EventParser((type, data, id) => this._onEvent(type, data, id));
          const decoder = new TextDecoder();
          const reader = response.body.getReader();
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            if (value && value.length) {
              gotByte = true;
              this._lastHeard = Date.now();
              parser.feed(decoder.decode(value, { stream: true }));
              if (this._finished()) { request.abort(); return; }
            }
          }
          backoff = 100;
        } catch (err) {
          if (this._finished()) return;
          if (this._protocolError) { this._fail(this._protocolError); return; }
          if (buffered) {
            mode = "poll";
          } else {
            if (!this._checkAlive()) return;
            await sleep(backoff);
            backoff = Math.min(backoff * 2, 2000);
          }
        } finally {
          clearTimeout(timer);
          if (!poll) triedStreaming = true;
          this._abort.signal.removeEventListener("abort", abortAll);
        }
      }
    }

    _onEvent(type, data, id) {
      if (type === "heartbeat" || type === "end") return;
      if (type === "ack") {
        this._takeAck(Number(data));
        return;
      }
      if (!["text", "text-json", "binary", "close"].includes(type)) return;
      const seq = Number(id);
      if (!(seq >= 1)) { this._protocolError = "an event without a sequence number"; return; }
      if (seq <= this._received) return;  // a repeat after a reconnect
      if (seq !== this._received + 1) {
        this._protocolError = "downstream message " + seq + " after " + this._received;
        this._abort.abort();
        return;
      }
      this._received = seq;
      this._scheduleAck();
      if (type === "close") {
        const body = JSON.parse(data);
        this._remoteClose = { code: body.code === null ? 1005 : body.code, reason: body.reason || "" };
        if (this._closeSeq === null) {
          // Answer with the same code, as a browser answers a close frame.
          this._queueClose(body.code, body.reason || "");
        }
        this._maybeClosed();
        return;
      }
      if (this._state !== STATES.OPEN) return;  // data after our close is dropped
      let payload;
      if (type === "text") payload = data;
      else if (type === "text-json") payload = JSON.parse(data);
      else {
        const bytes = base64ToBytes(data);
        payload = this._binaryType === "arraybuffer" ? bytes.buffer : new Blob([bytes]);
      }
      this._fire(new MessageEvent("message", { data: payload, origin: new URL(this._base).origin }));
    }

    _scheduleAck() {
      if (!this._ackTimer) {
        this._ackTimer = setTimeout(() => { this._ackTimer = null; this._flush(true); }, 1000);
      }
      if (this._received - this._ackedDown >= this._limits.window / 2) this._flush(true);
    }

    _takeAck(ack) {
      if (!(ack >= this._upAcked)) return;
      this._upAcked = ack;
      while (this._sent.length && this._sent[0].seq <= ack) {
        this._buffered -= this._sent.shift().size;
      }
      this._maybeClosed();
      this._flush();
    }

    _maybeClosed() {
      if (this._remoteClose && this._closeSeq !== null && this._upAcked >= this._closeSeq) {
        this._abort.abort();
        clearTimeout(this._ackTimer);
        this._fireClose(this._remoteClose.code, this._remoteClose.reason, true);
      }
    }

    // One upstream POST at a time, carrying every unacknowledged message that
    // fits (window and batch size); retried as it was after a failure.
    async _flush(pureAck) {
      if (this._posting || this._finished() || !this._session) return;
      const pending = this._sent.filter((m) => m.seq > this._upAcked).slice(0, this._limits.window);
      if (!pending.length && !(pureAck && this._received > this._ackedDown)) return;
      const messages = [];
      let size = 64;
      for (const message of pending) {
        if (messages.length && size + message.wireSize > this._limits.maxBatch) break;
        messages.push(message.wire);
        size += message.wireSize;
      }
      const ack = this._received;
      this._posting = true;
      const answer = await this._post({ ack, messages });
      this._posting = false;
      if (answer === null) return;
      this._ackedDown = Math.max(this._ackedDown, ack);
      if (this._ackTimer && this._received <= this._ackedDown) {
        clearTimeout(this._ackTimer);
        this._ackTimer = null;
      }
      const progress = answer.ack > this._upAcked;
      if (progress || !messages.length) {
        this._takeAck(answer.ack);
      } else {
        // The server had no room: it says so with an ack event, or we try later.
        setTimeout(() => this._flush(), 250);
      }
    }

    async _post(body) {
      let backoff = 100;
      while (!this._finished()) {
        try {
          const response = await fetch(this._url("up"), {
            method: "POST", headers: { "Content-Type": "application/json" },
            body: JSON.stringify(body), credentials: "include",
            cache: "no-store", signal: this._abort.signal,
          });
          if (response.status === 404 || response.status === 409 || response.status === 400) {
            this._fail("the fallback session refused an upstream request (" + response.status + ")");
            return null;
          }
          if (response.status !== 200) throw new Error("up answered " + response.status);
          const answer = await response.json();
          this._lastHeard = Date.now();
          return answer;
        } catch (err) {
          if (this._finished() || !this._checkAlive()) return null;
          await sleep(backoff);
          backoff = Math.min(backoff * 2, 2000);
        }
      }
      return null;
    }

    _enqueue(type, data, size) {
      const seq = this._nextSeq++;
      const wire = type === "close"
        ? { seq, type, code: data.code, reason: data.reason }
        : { seq, type, data };
      const wireSize = JSON.stringify(wire).length;
      if (type !== "close" && wireSize + 64 > this._limits.maxBatch) {
        // Too big to ever send: as a WebSocket does with a message over the limit.
        this._nextSeq--;
        this._queueClose(1009, "message too big");
        return;
      }
      this._sent.push({ seq, wire, wireSize, size });
      this._buffered += size;
      if (type === "close") this._closeSeq = seq;
      this._flush();
    }

    _queueClose(code, reason) {
      if (this._closeSeq !== null) return;
      this._state = STATES.CLOSING;
      this._enqueue("close", { code: code === undefined ? null : code, reason }, 0);
    }

    // -- the WebSocket API -------------------------------------------------------

    send(data) {
      if (this._state === STATES.CONNECTING) {
        throw new DOMException("Still in CONNECTING state.", "InvalidStateError");
      }
      if (this.transport === "websocket") {
        this._native.send(data);
        return;
      }
      let size;
      let convert;
      if (typeof data === "string") {
        size = utf8Length(data);
        convert = () => ["text", data];
      } else if (data instanceof Blob) {
        size = data.size;
        convert = async () => ["binary", bytesToBase64(new Uint8Array(await data.arrayBuffer()))];
      } else if (data instanceof ArrayBuffer || ArrayBuffer.isView(data)) {
        const bytes = data instanceof ArrayBuffer ? new Uint8Array(data)
          : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
        size = bytes.length;
        const copy = bytesToBase64(bytes);
        convert = () => ["binary", copy];
      } else {
        size = utf8Length(String(data));
        convert = () => ["text", String(data)];
      }
      if (this._state !== STATES.OPEN) {
        this._buffered += size;  // as a WebSocket does after close(): counted, never sent
        return;
      }
      // Blobs are read asynchronously: a chain keeps messages in send() order.
      this._sendChain = this._sendChain.then(async () => {
        const [type, payload] = await convert();
        if (this._closeSeq === null && !this._finished()) this._enqueue(type, payload, size);
      });
    }

    close(code, reason) {
      if (code !== undefined && code !== 1000 && !(code >= 3000 && code <= 4999)) {
        throw new DOMException("The close code must be 1000 or 3000-4999.", "InvalidAccessError");
      }
      reason = reason === undefined ? "" : String(reason);
      if (utf8Length(reason) > 123) {
        throw new DOMException("The close reason must be at most 123 bytes.", "SyntaxError");
      }
      if (this._state === STATES.CLOSING || this._state === STATES.CLOSED) return;
      if (this.transport === "websocket") {
        this._native.close(code, reason);
        return;
      }
      if (this._state === STATES.CONNECTING) {
        const native = this._native;
        if (native) {
          this._native = null;
          native.onopen = native.onmessage = native.onclose = native.onerror = null;
          native.close();
        }
        if (this._abort) this._abort.abort();
        this._fire(new Event("error"));
        this._fireClose(1006, "", false);
        return;
      }
      this._sendChain = this._sendChain.then(() =>
        this._queueClose(code === undefined ? null : code, reason));
      this._state = STATES.CLOSING;
    }
  }

  for (const [name, value] of Object.entries(STATES)) {
    TunnelWebSocket[name] = value;
    TunnelWebSocket.prototype[name] = value;
  }
  for (const type of ["open", "message", "close", "error"]) {
    Object.defineProperty(TunnelWebSocket.prototype, "on" + type, {
      get() { return this._handlers[type] || null; },
      set(handler) { this._handlers[type] = typeof handler === "function" ? handler : null; },
    });
  }

  global.TunnelWebSocket = TunnelWebSocket;
})(typeof window !== "undefined" ? window : globalThis);
