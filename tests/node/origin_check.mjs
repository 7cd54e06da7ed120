// Node `ws` (a third-party client) against the origin test server: echo of
// text and binary, subprotocol selection, permessage-deflate (ws offers it
// by default), close code and reason echoed, and a 16 MiB message. Prints
// one JSON line with what it observed; the Python test asserts on it.
// Usage: node origin_check.mjs ws://HOST:PORT
// `ws` is resolved from WS_MODULES_DIR (the adapter's node_modules), so the
// repository keeps one lockfile-pinned copy.
import { createRequire } from 'node:module';

const require = createRequire(`${process.env.WS_MODULES_DIR}/`);
const WebSocket = require('ws');

const base = process.argv[2];
const deadline = setTimeout(() => { console.error('timeout'); process.exit(1); }, 30_000);

function open(path, protocols) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(base + path, protocols, { maxPayload: 32 * 1024 * 1024 });
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

function next(ws) {
  return new Promise((resolve) => ws.once('message', (data, isBinary) => resolve({ data, isBinary })));
}

const ws = await open('/echo', ['chat.v2', 'chat.v1']);
const result = { subprotocol: ws.protocol, extensions: ws.extensions };
ws.send('hello from node');
let reply = await next(ws);
result.text = { data: reply.data.toString(), binary: reply.isBinary };
ws.send(Buffer.from([0, 1, 2, 255]));
reply = await next(ws);
result.binary = { data: [...reply.data], binary: reply.isBinary };
const big = Buffer.alloc(16 * 1024 * 1024, 7);
ws.send(big);
reply = await next(ws);
result.big = { length: reply.data.length, same: Buffer.compare(reply.data, big) === 0 };
result.close = await new Promise((resolve) => {
  ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() }));
  ws.close(4321, 'node says bye');
});
clearTimeout(deadline);
console.log(JSON.stringify(result));
