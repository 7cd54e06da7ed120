// Node `ws` as a third-party WebSocket server with permessage-deflate on
// (ws's defaults: messages under 1 KiB are sent uncompressed). Echoes every
// message with its type. Prints "port N" once listening; runs until killed.
// Usage: node deflate_server.mjs [no-context-takeover]
// `ws` is resolved from WS_MODULES_DIR (the adapter's node_modules).
import { createRequire } from 'node:module';

const require = createRequire(`${process.env.WS_MODULES_DIR}/`);
const { WebSocketServer } = require('ws');

const noContext = process.argv[2] === 'no-context-takeover';
const perMessageDeflate = noContext
  ? { serverNoContextTakeover: true, clientNoContextTakeover: true }
  : true;
const server = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate });
server.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
});
server.on('listening', () => console.log(`port ${server.address().port}`));
