// tunnelws harness adapter: Node `ws` through a proxy agent, two ways.
//
//   node client.mjs [https-proxy-agent]   (column node-ws)
//   node client.mjs proxy-agent           (column node-proxy-agent)
//
// https-proxy-agent: written the way its README shows and most `ws` users
// write it: neither library reads proxy variables, so the user's code hands
// one to `new HttpsProxyAgent(url)`: `wss://` uses https_proxy, `ws://`
// http_proxy (lower case first, then upper case); no_proxy and ALL_PROXY are
// not consulted. The adapter says so on stderr ("translated").
//
// proxy-agent: `new ProxyAgent()` with no arguments, as its README shows: it
// reads the environment itself through proxy-from-env (`ws_proxy`/`wss_proxy`
// for WebSocket URLs, then `all_proxy`; `no_proxy`) and picks an agent by the
// proxy URL's scheme (http, https, socks*, pac+*). Nothing is translated.
//
// The CA bundle comes from NODE_EXTRA_CA_CERTS, which Node reads at start-up.
//
// Contract: connect to TUNNELWS_URL, send TUNNELWS_MESSAGE (repeated
// TUNNELWS_MESSAGE_REPEAT times when set: one environment variable cannot
// hold a large message on Linux), print the echo, allowing
// TUNNELWS_CONNECT_TIMEOUT seconds (default 10) for connecting;
// with TUNNELWS_IDLE=S wait S seconds, listening, and do it once more. Exit 0
// on success, 1 with the library's error on stderr otherwise, 1 after a
// deadline of 20 s plus the idle wait.
import WebSocket from 'ws';
import { HttpsProxyAgent } from 'https-proxy-agent';
import { ProxyAgent } from 'proxy-agent';

const mode = process.argv[2] ?? 'https-proxy-agent';
const NAME = { 'https-proxy-agent': 'node-ws', 'proxy-agent': 'node-proxy-agent' }[mode];

function fail(text) {
  process.stderr.write(`${NAME ?? 'node'}: ${text}\n`);
  process.exit(1);
}

if (!NAME) fail(`unknown mode ${mode} (https-proxy-agent or proxy-agent)`);

const url = process.env.TUNNELWS_URL;
const repeat = Number(process.env.TUNNELWS_MESSAGE_REPEAT || '1');
const idleSeconds = Number(process.env.TUNNELWS_IDLE ?? '0');
if (!url) fail('TUNNELWS_URL is not set');
if (!Number.isInteger(repeat) || repeat < 1) fail('TUNNELWS_MESSAGE_REPEAT must be a whole number >= 1');
const message = (process.env.TUNNELWS_MESSAGE ?? 'hello').repeat(repeat);
const deadlineMs = (20 + idleSeconds) * 1000;

function agent() {
  if (mode === 'proxy-agent') return new ProxyAgent();
  const name = url.startsWith('wss:') ? 'https_proxy' : 'http_proxy';
  const variable = [name, name.toUpperCase()].find((v) => process.env[v]);
  if (!variable) return undefined;
  process.stderr.write(`${NAME}: translated: ${variable} -> new HttpsProxyAgent(...)\n`);
  return new HttpsProxyAgent(process.env[variable]);
}

// ws's own bound on getting connected (the proxy's CONNECT included).
const handshakeTimeout = 1000 * Number(process.env.TUNNELWS_CONNECT_TIMEOUT || '10');
const chosen = agent();
const options = chosen ? { agent: chosen, handshakeTimeout } : { handshakeTimeout };

setTimeout(() => fail(`no echo within ${deadlineMs / 1000} s`), deadlineMs).unref();

const socket = new WebSocket(url, options);
let echoes = 0;
const wanted = idleSeconds > 0 ? 2 : 1;

socket.on('open', () => socket.send(message));
socket.on('message', (data) => {
  process.stdout.write(`${data}\n`);
  echoes += 1;
  if (echoes < wanted) {
    setTimeout(() => socket.send(message), idleSeconds * 1000);
  } else {
    socket.close(1000);
  }
});
socket.on('error', (error) => fail(error.message || String(error)));
socket.on('close', (code, reason) => {
  if (echoes < wanted) fail(`closed before the echo: ${code} ${reason}`);
  process.exit(0);
});
