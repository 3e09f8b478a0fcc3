// A client of the Prism seed's KeyValue interfaces, written against Prism's own .proto
// files with @grpc/grpc-js and @grpc/proto-loader, as any Node.js service would be.
// Usage: node seed_client.js HOST:PORT PROTO_ROOT [API_KEY]
// Prints one JSON object with every answer; the Python test checks them.
'use strict';

const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const [target, protoRoot, apiKey] = process.argv.slice(2);
const files = [
  'prism/interfaces/keyvalue/keyvalue_basic.proto',
  'prism/interfaces/keyvalue/keyvalue_batch.proto',
  'prism/interfaces/keyvalue/keyvalue_ttl.proto',
];
const definition = protoLoader.loadSync(files, {
  includeDirs: [protoRoot],
  keepCase: true,
  longs: Number,
  defaults: true,
});
const kv = grpc.loadPackageDefinition(definition).prism.interfaces.keyvalue;
const credentials = grpc.credentials.createInsecure();
const clients = {
  basic: new kv.KeyValueBasicInterface(target, credentials),
  batch: new kv.KeyValueBatchInterface(target, credentials),
  ttl: new kv.KeyValueTTLInterface(target, credentials),
};

function call(client, method, request) {
  const metadata = new grpc.Metadata();
  if (apiKey) metadata.set('x-api-key', apiKey);
  return new Promise((resolve, reject) => {
    clients[client][method](request, metadata, { deadline: Date.now() + 10000 }, (error, response) => {
      if (error) reject(new Error(`${method}: ${error.code} ${error.details}`));
      else resolve(response);
    });
  });
}

const text = (response) => ({ ...response, value: response.value ? response.value.toString() : undefined });

async function main() {
  const out = {};
  out.set = await call('basic', 'Set', { key: 'greeting', value: Buffer.from('hello'), tags: { tags: { lang: 'en' } } });
  out.get = text(await call('basic', 'Get', { key: 'greeting' }));
  out.exists = await call('basic', 'Exists', { key: 'greeting' });
  out.getTtlForever = await call('ttl', 'GetTTL', { key: 'greeting' });
  out.expire = await call('ttl', 'Expire', { key: 'greeting', ttl_seconds: 600 });
  out.getTtl = await call('ttl', 'GetTTL', { key: 'greeting' });
  out.delete = await call('basic', 'Delete', { key: 'greeting' });
  out.existsAfter = await call('basic', 'Exists', { key: 'greeting' });
  out.getMissing = text(await call('basic', 'Get', { key: 'greeting' }));
  out.getTtlMissing = await call('ttl', 'GetTTL', { key: 'greeting' });
  out.batchSet = await call('batch', 'BatchSet', {
    requests: [
      { key: 'a', value: Buffer.from('1') },
      { key: 'b', value: Buffer.from('2') },
    ],
  });
  const batch = await call('batch', 'BatchGet', { keys: ['a', 'missing', 'b'] });
  out.batchGet = { found_count: batch.found_count, results: batch.results.map(text) };
  out.badKey = await call('basic', 'Set', { key: '', value: Buffer.from('x') });
  for (const client of Object.values(clients)) client.close();
  process.stdout.write(JSON.stringify(out));
}

main().catch((error) => {
  process.stderr.write(`${error.stack || error}\n`);
  process.exit(1);
});
