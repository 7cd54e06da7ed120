// tunnelws harness adapter: Node `ws` through `https-proxy-agent`.
//
// Written the way the https-proxy-agent README shows it: the proxy URL comes
// from the usual environment variable and an agent is handed to `ws`. Neither
// library reads proxy variables or no_proxy on its own, so this adapter does
// exactly what a typical user's few lines do: `wss://` uses https_proxy,
// `ws://` uses http_proxy (lower case first, then upper case), and no_proxy
// and ALL_PROXY are not consulted. The CA bundle comes from
// NODE_EXTRA_CA_CERTS, which Node reads at start-up.
//
// Contract: connect to TUNNELWS_URL, send TUNNELWS_MESSAGE (repeated
// TUNNELWS_MESSAGE_REPEAT times when set: one environment variable cannot
// hold a large message on Linux), print the echo, allowing
// TUNNELWS_CONNECT_TIMEOUT seconds (default 10) for connecting;
// with TUNNELWS_IDLE=S wait S seconds and do it once more. Exit 0 on success,
// 1 with the library's error on stderr otherwise, 1 after a 20 s deadline.
import WebSocket from 'ws';
import { HttpsProxyAgent } from 'https-proxy-agent';

const DEADLINE_MS = 20_000;

const url = process.env.TUNNELWS_URL;
const repeat = Number(process.env.TUNNELWS_MESSAGE_REPEAT || '1');
const idleSeconds = Number(process.env.TUNNELWS_IDLE ?? '0');

function fail(text) {
  process.stderr.write(`node-ws: ${text}\n`);
  process.exit(1);
}

if (!url) fail('TUNNELWS_URL is not set');
if (!Number.isInteger(repeat) || repeat < 1) fail('TUNNELWS_MESSAGE_REPEAT must be a whole number >= 1');
const message = (process.env.TUNNELWS_MESSAGE ?? 'hello').repeat(repeat);

const secure = url.startsWith('wss:');
const proxy = secure
  ? process.env.https_proxy || process.env.HTTPS_PROXY
  : process.env.http_proxy || process.env.HTTP_PROXY;
// ws's own bound on getting connected (the proxy's CONNECT included).
const handshakeTimeout = 1000 * Number(process.env.TUNNELWS_CONNECT_TIMEOUT || '10');
const options = proxy ? { agent: new HttpsProxyAgent(proxy), handshakeTimeout } : { handshakeTimeout };

setTimeout(() => fail(`no echo within ${DEADLINE_MS / 1000} s`), DEADLINE_MS).unref();

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
