// Span producer for isoscope's tests: the real OpenTelemetry JS SDK (sdk-trace-node, a
// BatchSpanProcessor and the OTLP/gRPC trace exporter, or with --protocol http/protobuf the
// OTLP/HTTP protobuf one, @opentelemetry/exporter-trace-otlp-proto, posting to
// http://HOST:PORT/v1/traces), exporting to isoscope's receiver.
//
// usage: node produce.js --endpoint HOST:PORT --out FILE
//                        (--count N | --rate SPANS_PER_S --duration S) [--service NAME]
//                        [--protocol grpc|http/protobuf]
// Spans come in traces of two: a SERVER root "root-<i>" and its CLIENT child "child-<i>"
// (parent link through the API context). Every produced span is appended to FILE as
// {"traceId","spanId","parentSpanId","name","endedAtMs"}. At the end the SDK is flushed and shut
// down, and one JSON summary line goes to stdout:
//   {"produced": n, "exportedOk": spans the exporter reported as exported, "exportFailed": ...}
'use strict';

const fs = require('fs');
const api = require('@opentelemetry/api');
const { NodeTracerProvider } = require('@opentelemetry/sdk-trace-node');
const { BatchSpanProcessor } = require('@opentelemetry/sdk-trace-base');
const { resourceFromAttributes } = require('@opentelemetry/resources');

function arg(name, dflt) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}
const endpoint = arg('endpoint');
const out = arg('out');
const count = Number(arg('count', '0'));
const rate = Number(arg('rate', '0'));
const duration = Number(arg('duration', '0'));
const service = arg('service', 'isoscope-otlp-test');
const protocol = arg('protocol', 'grpc');
if (!endpoint || !out || (!count && !(rate && duration))) {
  console.error('usage: node produce.js --endpoint HOST:PORT --out FILE (--count N | --rate R --duration S)');
  process.exit(2);
}

// Counts what the SDK's exporter reports, batch by batch.
class CountingExporter {
  constructor(inner) {
    this.inner = inner;
    this.ok = 0;
    this.failed = 0;
    this.errors = new Set();
  }
  export(spans, done) {
    this.inner.export(spans, (result) => {
      if (result.code === 0) this.ok += spans.length;
      else {
        this.failed += spans.length;
        if (result.error) this.errors.add(String(result.error.message || result.error));
      }
      done(result);
    });
  }
  shutdown() { return this.inner.shutdown(); }
  forceFlush() { return this.inner.forceFlush ? this.inner.forceFlush() : Promise.resolve(); }
}

function makeExporter() {
  if (protocol === 'http/protobuf') {
    const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-proto');
    return new OTLPTraceExporter({ url: `http://${endpoint}/v1/traces` });
  }
  if (protocol !== 'grpc') {
    console.error(`unknown --protocol ${protocol} (grpc, http/protobuf)`);
    process.exit(2);
  }
  const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-grpc');
  return new OTLPTraceExporter({ url: `http://${endpoint}` });
}
const exporter = new CountingExporter(makeExporter());
const provider = new NodeTracerProvider({
  resource: resourceFromAttributes({ 'service.name': service }),
  spanProcessors: [new BatchSpanProcessor(exporter, {
    maxQueueSize: 100000,
    maxExportBatchSize: 128,
    scheduledDelayMillis: 100,
  })],
});
const tracer = provider.getTracer('isoscope-otlp-test', '1.0.0');

const records = [];
let produced = 0;
function record(span, name) {
  const c = span.spanContext();
  const parent = span.parentSpanContext ? span.parentSpanContext.spanId : (span.parentSpanId || '');
  records.push(JSON.stringify({ traceId: c.traceId, spanId: c.spanId, parentSpanId: parent || '', name, endedAtMs: Date.now() }));
  produced++;
}

function trace(i, withChild) {
  const root = tracer.startSpan(`root-${i}`, { kind: api.SpanKind.SERVER, attributes: { 'test.index': i } });
  if (withChild) {
    const ctx = api.trace.setSpan(api.context.active(), root);
    const child = tracer.startSpan(`child-${i}`, { kind: api.SpanKind.CLIENT, attributes: { 'test.index': i } }, ctx);
    child.end();
    record(child, `child-${i}`);
  }
  root.end();
  record(root, `root-${i}`);
}

function flushRecords() {
  if (records.length) fs.appendFileSync(out, records.splice(0).join('\n') + '\n');
}

async function main() {
  if (count) {
    let i = 0;
    while (produced < count) {
      trace(i++, count - produced >= 2);
      if (i % 200 === 0) await new Promise((r) => setImmediate(r));
    }
  } else {
    const started = Date.now();
    let i = 0;
    while (Date.now() - started < duration * 1000) {
      const due = Math.floor(((Date.now() - started) / 1000) * rate);
      while (produced < due) trace(i++, true);
      flushRecords();
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  flushRecords();
  await provider.forceFlush();
  await provider.shutdown();
  process.stdout.write(JSON.stringify({
    produced, exportedOk: exporter.ok, exportFailed: exporter.failed, errors: [...exporter.errors],
  }) + '\n');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
