// The metadata limits through a real client: node limits.js <port> <generation 2|4>
// with the sidecar started with --max-metadata-value 10000 --max-streams-per-client 3.
// Prints `PASS limits` and exits 0, or prints the failure and exits 1.
'use strict';

const assert = require('assert');
const { MetadataClient, errorIs } = require('./client');

const [port, generation] = process.argv.slice(2);
const DB = ['limits-bucket'];
const MAX_VALUE = 10000;
const MAX_STREAMS = 3;

async function expectInvalid(promise, what) {
    let failed = null;
    try {
        await promise;
    } catch (error) {
        failed = error;
    }
    assert(failed && failed.wire, `${what}: expected an error answer`);
    assert(errorIs(failed.wire, 'InvalidArgument'), `${what}: ${JSON.stringify(failed.wire)}`);
    return failed.wire;
}

async function main() {
    const client = new MetadataClient(port, generation);
    await client.connected();

    // Keys over the limit: a clear InvalidArgument for put, get and del, nothing stored.
    const longKey = 'k'.repeat(9000);
    const wire = await expectInvalid(client.call('put', [longKey, '{}', {}], DB), 'long put');
    assert(/key too long/.test(wire.description || wire.message || JSON.stringify(wire)),
        JSON.stringify(wire));
    await expectInvalid(client.call('get', [longKey, {}], DB), 'long get');
    await expectInvalid(client.call('del', [longKey, {}], DB), 'long del');
    // The longest accepted key still works.
    const okKey = 'k'.repeat(8 * 1024 - 128);
    await client.call('put', [okKey, '{"a":1}', {}], DB);
    assert.strictEqual(await client.call('get', [okKey, {}], DB), '{"a":1}');
    // With versions: the version suffix fits beside the longest key, a longer versionId is
    // refused as the caller's mistake rather than failing inside the store.
    await client.call('put', [okKey, '{"a":2}', { versioning: true }], DB);
    await expectInvalid(client.call('put', [okKey, '{}', { versionId: 'v'.repeat(200) }], DB),
        'long versionId');
    let noVersion = null;
    try {
        await client.call('get', [okKey, { versionId: 'v'.repeat(127) }], DB);
    } catch (error) {
        noVersion = error;
    }
    assert(noVersion && errorIs(noVersion.wire, 'ObjNotFound'), JSON.stringify(noVersion && noVersion.wire));

    // Values over the limit: refused, and the key stays absent.
    await expectInvalid(client.call('put', ['big', 'v'.repeat(MAX_VALUE + 1), {}], DB), 'big put');
    let missing = null;
    try {
        await client.call('get', ['big', {}], DB);
    } catch (error) {
        missing = error;
    }
    assert(missing && errorIs(missing.wire, 'ObjNotFound'), 'the refused value was stored');
    await client.call('put', ['fits', 'v'.repeat(MAX_VALUE), {}], DB);

    // Streams: MAX_STREAMS listings left unconsumed hold their slots; the next is refused
    // with an answer (not a stall); consuming one frees a slot. A listing needs more items
    // than the server sends ahead of acks (4 batches of 256) to stay open while unconsumed.
    for (let first = 0; first < 1200; first += 200) {
        const puts = [];
        for (let i = first; i < first + 200; i += 1) {
            puts.push(client.call('put', [`item-${String(i).padStart(5, '0')}`, '{}', {}], DB));
        }
        await Promise.all(puts);
    }
    const markers = [];
    for (let i = 0; i < MAX_STREAMS; i += 1) {
        markers.push(await client.call('createReadStream', [{}], DB));
    }
    await expectInvalid(client.call('createReadStream', [{}], DB), 'stream over the limit');
    await expectInvalid(client.call('rawListKeys', [{}], []), 'raw listing over the limit');
    const items = await new Promise((resolve, reject) => {
        const got = [];
        client.stream(markers[0]).attach({
            onData: (data, ack) => { got.push(...data); ack(null); },
            onEnd: () => resolve(got),
            onError: error => reject(new Error(JSON.stringify(error))),
        });
    });
    assert(items.length >= 1200, `${items.length} items`);
    let reopened = null;
    for (let attempt = 0; attempt < 50 && !reopened; attempt += 1) {
        try {
            reopened = await client.list('createReadStream', {}, DB);
        } catch (error) {
            await new Promise(resolve => setTimeout(resolve, 100));
        }
    }
    assert(reopened && reopened.length === items.length, 'no slot came back');
    // Another connection has its own slots, even while this one's are taken.
    // (Fill this connection's slots again: the two older listings may have timed out.)
    for (let i = 0; i < MAX_STREAMS; i += 1) {
        try {
            await client.call('createReadStream', [{}], DB);
        } catch (error) {
            break;
        }
    }
    await expectInvalid(client.call('createReadStream', [{}], DB), 'this connection is full');
    const other = new MetadataClient(port, generation);
    await other.connected();
    assert.strictEqual((await other.list('createReadStream', {}, DB)).length, items.length);
    other.close();
    client.close();
    console.log('PASS limits');
}

main().then(() => process.exit(0), error => {
    console.log(error && error.stack || error);
    process.exit(1);
});
