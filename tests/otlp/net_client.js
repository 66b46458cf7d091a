// An instrumented HTTP client for isoscope's network tests (tests/integration/test_network.py):
// node:http with the real OpenTelemetry JS SDK. Every request gets its own CLIENT span (a root
// span, kind CLIENT) and carries `traceparent: 00-<trace id>-<CLIENT span id>-01`, injected by the
// W3C propagator from the span's context, so the header the client's thread writes names the
// span that sent it. Spans are exported over OTLP/gRPC to --endpoint (isoscope's receiver).
//
// usage: node net_client.js --target HOST:PORT --endpoint HOST:PORT --out FILE.jsonl
//                           [--requests N] [--warmup W] [--concurrency C] [--rate R]
//                           [--body-bytes B] [--no-keepalive] [--service NAME] [--timeout-ms T]
//
//   --requests N       measured requests (default 50), after --warmup W unmeasured ones (default 3)
//   --concurrency C    C workers, each sending its requests one after another (default 1); with
//                      keep-alive each worker keeps to one connection
//   --rate R           total requests per second across workers (default 0: as fast as answered)
//   --body-bytes B     POST body of B bytes (default 0: GET without body)
//   --no-keepalive     a new connection per request (`Connection: close`)
//
// FILE gets one JSON line per request: {"i","worker","warmup","traceId","spanId","status",
// "latencyMs" (client-measured, request start to response end),"startMs","endMs" (wall clock),
// "server" (the server's JSON answer, when it parsed), "error"}. At the end it prints
// {"done": n, "errors": e, "medianMs": m} on stdout, flushes the SDK and exits 0 (1 when any
// request failed).
'use strict';

const fs = require('node:fs');
const http = require('node:http');
const { performance } = require('node:perf_hooks');
const { arg, makeTracer, nowHr, hrMs } = require('./otel_setup');

const flag = (name) => process.argv.includes(`--${name}`);
const target = arg('target', '');
const endpoint = arg('endpoint', '');
const out = arg('out', '');
const requests = Number(arg('requests', '50'));
const warmup = Number(arg('warmup', '3'));
const concurrency = Math.max(1, Number(arg('concurrency', '1')));
const rate = Number(arg('rate', '0'));
const bodyBytes = Number(arg('body-bytes', '0'));
const keepAlive = !flag('no-keepalive');
const service = arg('service', 'isoscope-net-client');
const timeoutMs = Number(arg('timeout-ms', '20000'));
if (!target || !endpoint || !out) {
  console.error('usage: node net_client.js --target HOST:PORT --endpoint HOST:PORT --out FILE');
  process.exit(2);
}
const [thost, tport] = target.split(':');

const { api, tracer, shutdown } = makeTracer({
  service, endpoint, tracerName: 'isoscope-net-test', maxQueueSize: 20000,
});

const agent = new http.Agent({ keepAlive, maxSockets: concurrency, maxFreeSockets: concurrency });
const body = bodyBytes > 0 ? Buffer.alloc(bodyBytes, 'x') : null;
const outFd = fs.openSync(out, 'a');

function once(i, worker, isWarmup) {
  return new Promise((resolve) => {
    const method = body ? 'POST' : 'GET';
    const span = tracer.startSpan(`${method} /work`, {
      kind: api.SpanKind.CLIENT,
      attributes: { 'http.request.method': method, 'server.address': thost,
                    'server.port': Number(tport), 'test.i': i, 'test.worker': worker },
    }, api.ROOT_CONTEXT);
    const ctx = api.trace.setSpan(api.ROOT_CONTEXT, span);
    const headers = {};
    api.propagation.inject(ctx, headers);
    if (body) {
      headers['content-type'] = 'application/octet-stream';
      headers['content-length'] = String(body.length);
    }
    if (!keepAlive) headers.connection = 'close';
    const start = nowHr();
    const t0 = performance.now();
    const rec = { i, worker, warmup: isWarmup, traceId: span.spanContext().traceId,
                  spanId: span.spanContext().spanId, traceparent: headers.traceparent };
    let finished = false;
    const finish = (status, text, err) => {
      if (finished) return;
      finished = true;
      const t1 = performance.now();
      const end = nowHr();
      span.setAttribute('http.response.status_code', status || 0);
      if (err) span.setStatus({ code: api.SpanStatusCode.ERROR, message: String(err) });
      span.end(end);
      rec.status = status || 0;
      rec.latencyMs = t1 - t0;
      rec.startMs = hrMs(start);
      rec.endMs = hrMs(end);
      if (text) { try { rec.server = JSON.parse(text); } catch (e) { /* padding only */ } }
      if (err) rec.error = String(err);
      fs.writeSync(outFd, JSON.stringify(rec) + '\n');
      resolve(rec);
    };
    const req = http.request({ host: thost, port: Number(tport), method, path: `/work?i=${i}`,
                               headers, agent, timeout: timeoutMs }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => finish(res.statusCode, Buffer.concat(chunks).toString().trim()));
      res.on('error', (e) => finish(res.statusCode, '', e));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e) => finish(0, '', e));
    req.end(body || undefined);
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  for (let i = 0; i < warmup; i++) await once(-1 - i, 0, true);
  let next = 0;
  let errors = 0;
  const lat = [];
  const gap = rate > 0 ? (1000 * concurrency) / rate : 0;
  async function worker(w) {
    for (;;) {
      const i = next++;
      if (i >= requests) return;
      const t = performance.now();
      const r = await once(i, w, false);
      if (r.error || r.status !== 200) errors++; else lat.push(r.latencyMs);
      const left = gap - (performance.now() - t);
      if (left > 0) await sleep(left);
    }
  }
  await Promise.all(Array.from({ length: concurrency }, (_, w) => worker(w)));
  lat.sort((a, b) => a - b);
  agent.destroy();
  fs.closeSync(outFd);
  await shutdown();
  process.stdout.write(JSON.stringify({ done: requests, errors,
                                        medianMs: lat.length ? lat[lat.length >> 1] : null }) + '\n');
  process.exit(errors ? 1 : 0);
}
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(1));
main();
