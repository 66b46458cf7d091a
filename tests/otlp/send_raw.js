// Sends raw bytes to an OTLP/gRPC method with @grpc/grpc-js and prints the outcome, for tests of
// how isoscope's receiver handles malformed, truncated and oversized payloads.
//
// usage: node send_raw.js --target HOST:PORT --method PATH --case NAME
// cases: garbage (random-looking bytes), truncated (a valid request cut in half), oversized
// (a valid request of 5 MiB), bad_utf8 (a span name that is not UTF-8), deep (attribute values
// nested 200 levels), valid (one valid span, encoded by otlp-transformer's generated code).
// Prints {"case","bytes","code","details"} (code: the gRPC status code number, 0 = OK).
'use strict';

const crypto = require('crypto');
const grpc = require('@grpc/grpc-js');
const root = require('@opentelemetry/otlp-transformer/build/src/generated/root.js');

const TraceV1 = root.opentelemetry.proto.collector.trace.v1;

function arg(name, dflt) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}
const target = arg('target');
const method = arg('method', '/opentelemetry.proto.collector.trace.v1.TraceService/Export');
const which = arg('case', 'garbage');

function request(name, attributes = []) {
  return {
    resourceSpans: [{
      resource: { attributes: [{ key: 'service.name', value: { stringValue: 'send-raw' } }] },
      scopeSpans: [{
        scope: { name: 'send-raw' },
        spans: [{
          traceId: crypto.randomBytes(16), spanId: crypto.randomBytes(8), name, kind: 2,
          startTimeUnixNano: 1700000000000000000, endTimeUnixNano: 1700000000000001000, attributes,
        }],
      }],
    }],
  };
}
const encode = (req) => Buffer.from(TraceV1.ExportTraceServiceRequest.encode(req).finish());

function payload() {
  switch (which) {
    case 'garbage': return Buffer.from('\xff\xff\xff\xff\x0f not an OTLP request', 'latin1');
    case 'truncated': {
      const full = encode(request('truncated', [{ key: 'pad', value: { stringValue: 'x'.repeat(200) } }]));
      return full.subarray(0, Math.floor(full.length / 2));
    }
    case 'oversized': return encode(request('oversized', [{ key: 'blob', value: { stringValue: 'x'.repeat(5 << 20) } }]));
    case 'bad_utf8': {
      const b = encode(request('@@'));
      const at = b.indexOf('@@');
      b[at] = 0xc3;
      b[at + 1] = 0x28;
      return b;
    }
    case 'deep': {
      let v = { stringValue: 'leaf' };
      for (let i = 0; i < 200; i++) v = { kvlistValue: { values: [{ key: 'k', value: v }] } };
      return encode(request('deep', [{ key: 'nested', value: v }]));
    }
    case 'valid': return encode(request('valid'));
    default: throw new Error(`unknown case ${which}`);
  }
}

const body = payload();
const client = new grpc.Client(target, grpc.credentials.createInsecure(), {
  'grpc.max_send_message_length': -1,
  'grpc.max_receive_message_length': -1,
});
client.makeUnaryRequest(method, (b) => b, (b) => b, body, { deadline: Date.now() + 20000 }, (err) => {
  process.stdout.write(JSON.stringify({
    case: which, bytes: body.length, code: err ? err.code : 0, details: err ? err.details : '',
  }) + '\n');
  client.close();
});
