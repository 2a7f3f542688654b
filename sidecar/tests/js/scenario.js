// Runs one protocol scenario against a metadata server:
//   node scenario.js <port> <generation 2|4> <scenario> [polling|websocket]
// Prints `PASS <scenario>` and exits 0, or prints the failure and exits 1.
'use strict';

const assert = require('assert');
const { MetadataClient, errorIs } = require('./client');

const [port, generation, scenario, transport] = process.argv.slice(2);
const transports = transport ? [transport] : undefined;

const OWNER = '79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be';
const MS = ['__metastore'];
const UB = ['users..bucket'];

function bucketInfo(name, extra) {
    return JSON.stringify(Object.assign({
        acl: { Canned: 'private', FULL_CONTROL: [], WRITE: [], WRITE_ACP: [], READ: [], READ_ACP: [] },
        name, owner: OWNER, ownerDisplayName: 'bart', creationDate: '2024-10-22T10:00:00.000Z',
        mdBucketModelVersion: 16, transient: false, deleted: false,
    }, extra || {}));
}

function objectMD(key, extra) {
    return JSON.stringify(Object.assign({
        'owner-id': OWNER, 'content-length': 11, 'content-type': 'text/plain',
        'content-md5': '5eb63bbbe01eeed093cb22bb8f5acdc3', key,
        location: [{ key: '3f2a9c41d0b7e6a58c1f24d9b0e7a6c5d4b3a291', size: 11, start: 0,
            dataStoreName: 'file', dataStoreETag: '1:5eb63bbbe01eeed093cb22bb8f5acdc3' }],
        isPHD: false, 'md-model-version': 6,
    }, extra || {}));
}

function incremented(prefix) {
    return prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1);
}

async function expectError(promise, type) {
    try {
        await promise;
    } catch (error) {
        assert.ok(errorIs(error.wire, type), `expected ${type}, got ${error.message}`);
        return error.wire;
    }
    throw new Error(`expected ${type}, got success`);
}

async function rawError(client, name, args, type) {
    const [err] = await client.rawCall(name, args);
    assert.ok(errorIs(err, type), `${name}: expected ${type}, got ${JSON.stringify(err)}`);
}

const scenarios = {};

scenarios.manifest = async c => {
    const manifest = await c.call('getManifest', []);
    assert.strictEqual(manifest.apiVersion, '1.0');
    const names = manifest.api.map(entry => entry.name).sort();
    assert.deepStrictEqual(names,
        ['createReadStream', 'del', 'get', 'getDiskUsage', 'getUUID', 'put', 'rawListKeys']);
};

scenarios.cloudserver = async c => {
    await scenarios.manifest(c);
    // Startup: users..bucket in the metastore, idempotent.
    assert.strictEqual(await c.call('put', ['users..bucket', bucketInfo('users..bucket'), {}], MS), null);
    // CreateBucket.
    await expectError(c.call('get', ['mybucket', {}], MS, 'aaaa:bbbb'), 'ObjNotFound');
    await c.call('put', ['mybucket', bucketInfo('mybucket', { transient: true }), {}], MS);
    assert.ok((await c.call('get', ['users..bucket', {}], MS)).includes('users..bucket'));
    const userKey = `${OWNER}..|..mybucket`;
    assert.strictEqual(await c.call('put', [userKey,
        JSON.stringify({ creationDate: '2024-10-22T10:00:00.000Z', ingestion: null }), {}], UB), null);
    const finalInfo = bucketInfo('mybucket');
    await c.call('put', ['mybucket', finalInfo, {}], MS);
    assert.strictEqual(await c.call('get', ['mybucket', {}], MS), finalInfo);
    // ListBuckets.
    const buckets = await c.list('createReadStream',
        { gte: `${OWNER}..|..`, lt: `${OWNER}..|./` }, UB);
    assert.deepStrictEqual(buckets.map(item => item.key), [userKey]);
    // PutObject / GetObject (non-versioned).
    const B = ['mybucket'];
    await expectError(c.call('get', ['hello.txt', {}], B), 'ObjNotFound');
    const md = objectMD('hello.txt');
    assert.strictEqual(await c.call('put', ['hello.txt', md, { overheadField: ['a'] }], B), null);
    assert.strictEqual(await c.call('get', ['hello.txt', {}], B), md, 'value byte-exact');
    for (const key of ['photos/2019/a.jpg', 'photos/2019/b.jpg', 'photos/2020/c.jpg',
        'photos/cat.jpg', 'zeta', 'été/ü', 'emoji/😀']) {
        await c.call('put', [key, objectMD(key), {}], B);
    }
    // ListObjects: prefix + delimiter + marker bounds, and the other options.
    const keysOf = items => items.map(item => item.key);
    assert.deepStrictEqual(keysOf(await c.list('createReadStream',
        { gte: 'photos/20190', lt: 'photos0' }, B)), ['photos/2020/c.jpg', 'photos/cat.jpg']);
    assert.deepStrictEqual(keysOf(await c.list('createReadStream',
        { gte: 'photos/', lt: incremented('photos/') }, B)),
    ['photos/2019/a.jpg', 'photos/2019/b.jpg', 'photos/2020/c.jpg', 'photos/cat.jpg']);
    assert.deepStrictEqual(keysOf(await c.list('createReadStream', { gt: 'photos/cat.jpg' }, B)),
        ['zeta', 'été/ü']);
    const all = keysOf(await c.list('createReadStream', {}, B));
    assert.deepStrictEqual(all, ['emoji/😀', 'hello.txt', 'photos/2019/a.jpg', 'photos/2019/b.jpg',
        'photos/2020/c.jpg', 'photos/cat.jpg', 'zeta', 'été/ü'], 'byte-wise UTF-8 order');
    assert.deepStrictEqual(await c.list('createReadStream',
        { reverse: true, limit: 2, values: false }, B), ['été/ü', 'zeta']);
    assert.deepStrictEqual(await c.list('createReadStream', { keys: false, gte: 'zeta', lte: 'zeta' }, B),
        [objectMD('zeta')]);
    assert.deepStrictEqual(await c.list('createReadStream', { limit: 0 }, B), []);
    assert.deepStrictEqual(await c.list('createReadStream', { keys: false, values: false }, B), []);
    assert.deepStrictEqual(await c.list('createReadStream', { gt: 'a', gte: 'b' }, B), []);
    assert.deepStrictEqual(keysOf(await c.list('createReadStream', { lt: 'hello.txt', lte: 'zeta' }, B)),
        ['emoji/😀']);
    assert.deepStrictEqual(await c.list('createReadStream', {}, ['empty-bucket']), []);
    // DeleteObject (non-versioned); deleting a missing key is fine.
    assert.strictEqual(await c.call('del', ['zeta', {}], B), null);
    await expectError(c.call('get', ['zeta', {}], B), 'ObjNotFound');
    assert.strictEqual(await c.call('del', ['zeta', {}], B), null);

    // A versioned key with three versions.
    const V = ['vbucket'];
    await c.call('put', ['vbucket', bucketInfo('vbucket',
        { versioningConfiguration: { Status: 'Enabled' } }), {}], MS);
    const vids = [];
    for (const n of [1, 2, 3]) {
        const result = await c.call('put', ['doc.txt', objectMD('doc.txt', { n }),
            { versioning: true, overheadField: ['x'] }], V);
        assert.strictEqual(typeof result, 'string', 'versioned put answers a JSON string');
        const { versionId } = JSON.parse(result);
        assert.match(versionId, /^\d{20}RG001  \d+$/);
        vids.push(versionId);
    }
    assert.ok(vids[2] < vids[1] && vids[1] < vids[0], 'newer ids sort first');
    const master = JSON.parse(await c.call('get', ['doc.txt', {}], V));
    assert.strictEqual(master.n, 3);
    assert.strictEqual(master.versionId, vids[2]);
    assert.strictEqual(JSON.parse(await c.call('get', ['doc.txt', { versionId: vids[0] }], V)).n, 1);
    await expectError(c.call('get', ['doc.txt', { versionId: '99999999999999999999RG001  9' }], V),
        'ObjNotFound');
    // ListObjectVersions: master then versions, newest first.
    const versions = await c.list('createReadStream', { gte: 'doc.txt', lt: 'doc.txt\u0001' }, V);
    assert.deepStrictEqual(versions.map(item => item.key),
        ['doc.txt', ...vids.slice().reverse().map(vid => `doc.txt\u0000${vid}`)]);
    assert.deepStrictEqual(keysOf(await c.list('createReadStream',
        { gte: `doc.txt\u0000${vids[1]}` }, V)),
    [`doc.txt\u0000${vids[1]}`, `doc.txt\u0000${vids[0]}`]);
    // Delete the latest version: a placeholder master, repaired by the next get.
    assert.strictEqual(await c.call('del', ['doc.txt', { versionId: vids[2] }], V),
        `{"versionId":"${vids[2]}"}`);
    const [phd] = await c.list('createReadStream', { gte: 'doc.txt', lte: 'doc.txt' }, V);
    assert.match(phd.value, /^\{ "isPHD": true, "versionId": "\d{20}RG001  \d+" \}$/);
    assert.notStrictEqual(JSON.parse(phd.value).versionId, vids[2]);
    assert.strictEqual(JSON.parse(await c.call('get', ['doc.txt', {}], V)).n, 2);
    const [repaired] = await c.list('createReadStream', { gte: 'doc.txt', lte: 'doc.txt' }, V);
    assert.strictEqual(JSON.parse(repaired.value).versionId, vids[1], 'master repaired');
    // Delete an older version: master untouched.
    await c.call('del', ['doc.txt', { versionId: vids[0] }], V);
    assert.strictEqual(JSON.parse(await c.call('get', ['doc.txt', {}], V)).n, 2);
    await expectError(c.call('get', ['doc.txt', { versionId: vids[0] }], V), 'ObjNotFound');
    // Delete the last version: the get finds nothing and removes the placeholder.
    await c.call('del', ['doc.txt', { versionId: vids[1] }], V);
    await expectError(c.call('get', ['doc.txt', {}], V), 'ObjNotFound');
    assert.deepStrictEqual(await c.list('createReadStream', { gte: 'doc.txt', lt: 'doc.txt\u0001' }, V), []);
    // Delete marker then null version (suspended versioning).
    const dm = JSON.parse(await c.call('put', ['gone.txt', objectMD('gone.txt', { isDeleteMarker: true }),
        { versioning: true }], V)).versionId;
    assert.ok((await c.call('get', ['gone.txt', {}], V)).includes('"isDeleteMarker":true'));
    assert.strictEqual(await c.call('put', ['gone.txt', objectMD('gone.txt', { isNull: true }),
        { versionId: 'null' }], V), '{"versionId":"null"}');
    assert.ok((await c.call('get', ['gone.txt', { versionId: 'null' }], V)).includes('"isNull":true'));
    const suspended = JSON.parse(await c.call('put', ['gone.txt', objectMD('gone.txt', { isNull: true }),
        { versionId: '', isNull: true, deleteNullKey: true }], V)).versionId;
    assert.ok(suspended < dm);
    await expectError(c.call('get', ['gone.txt', { versionId: 'null' }], V), 'ObjNotFound');
    assert.strictEqual(await c.call('del', ['gone.txt', { versionId: 'null' }], V), '{"versionId":"null"}');

    // Multipart upload keys in the shadow bucket.
    const uploadId = '0f9e8d7c6b5a49382716a5b4c3d2e1f0';
    const SH = ['mpuShadowBucketmybucket'];
    await expectError(c.call('get', ['mpuShadowBucketmybucket', {}], MS), 'ObjNotFound');
    await c.call('put', ['mpuShadowBucketmybucket', bucketInfo('mpuShadowBucketmybucket'), {}], MS);
    const overview = `overview..|..big.iso..|..${uploadId}`;
    await c.call('put', [overview, JSON.stringify({ id: uploadId, key: 'big.iso' }), {}], SH);
    for (const part of ['00001', '00002', '00010']) {
        await c.call('put', [`${uploadId}..|..${part}`, JSON.stringify({ 'md-model-version': 3,
            partLocations: [{ key: 'ab' }], key: part }), {}], SH);
    }
    const parts = await c.list('createReadStream', { gte: uploadId, lt: incremented(uploadId) }, SH);
    assert.deepStrictEqual(parts.map(p => p.key.split('..|..')[1]), ['00001', '00002', '00010']);
    const uploads = await c.list('createReadStream',
        { gte: 'overview..|..', lt: incremented('overview..|..') }, SH);
    assert.deepStrictEqual(uploads.map(u => u.key), [overview]);
    await c.call('put', ['big.iso', objectMD('big.iso', { replayId: uploadId }), { replayId: uploadId }], B);
    for (const part of ['00001', '00002', '00010']) {
        await c.call('del', [`${uploadId}..|..${part}`, { overheadField: [] }], SH);
    }
    await c.call('del', [overview, {}], SH);
    assert.deepStrictEqual(await c.list('createReadStream', {}, SH), []);

    // Report: rawListKeys in level-sublevel's encoding, getUUID, getDiskUsage. Each item is
    // the raw key string whatever the options (the reference's key stream): countItems calls
    // `.includes` on it.
    await c.call('put', ['rootkey', '{}', {}], []);
    const rawKeys = await c.list('rawListKeys', {}, ['ignored']);
    const allStrings = items => items.every(item => typeof item === 'string');
    assert.ok(allStrings(rawKeys), `rawListKeys items are strings: ${JSON.stringify(rawKeys.slice(0, 3))}`);
    for (const expected of ['!!rootkey', '!__metastore!mybucket', `!users..bucket!${userKey}`,
        '!mybucket!hello.txt', '!mybucket!big.iso', '!__metastore!users..bucket']) {
        assert.ok(rawKeys.includes(expected), `rawListKeys has ${expected}`);
    }
    assert.deepStrictEqual(rawKeys, rawKeys.slice().sort((a, b) => Buffer.compare(
        Buffer.from(a), Buffer.from(b))));
    assert.ok(rawKeys.some(k => k.includes('users..bucket') && k.split('..|..')[1] === 'mybucket'),
        'countItems finds the bucket after the splitter');
    for (const shape of [{ values: false }, { keys: false }, { keys: false, values: false },
        { keys: true, values: true }]) {
        assert.deepStrictEqual(await c.list('rawListKeys', shape), rawKeys,
            `keys/values do not change rawListKeys: ${JSON.stringify(shape)}`);
    }
    const onlyMybucket = await c.list('rawListKeys', { gte: '!mybucket!', lt: '!mybucket"', keys: false });
    assert.ok(onlyMybucket.length > 3 && allStrings(onlyMybucket)
        && onlyMybucket.every(k => k.startsWith('!mybucket!')), JSON.stringify(onlyMybucket));
    assert.deepStrictEqual(onlyMybucket, rawKeys.filter(k => k.startsWith('!mybucket!')));
    assert.deepStrictEqual(await c.list('rawListKeys', { gt: '!mybucket!', lt: '!mybucket"', reverse: true, limit: 2 }),
        onlyMybucket.slice(-2).reverse());
    const uuid = await c.call('getUUID', []);
    assert.match(uuid, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.strictEqual(await c.call('getUUID', []), uuid);
    const usage = await c.call('getDiskUsage', []);
    for (const field of ['available', 'free', 'total']) {
        assert.strictEqual(typeof usage[field], 'number', field);
    }
    // Unknown call.
    await rawError(c, 'batch', { rpcArgs: [], subLevel: [] }, 'InvalidArgument');
    assert.strictEqual(c.unknownStreamData, 0, 'every stream-data came after its call ack');
};

async function fill(c, db, count) {
    const pending = [];
    for (let i = 0; i < count; i += 1) {
        const key = `key-${String(i).padStart(6, '0')}`;
        pending.push(c.call('put', [key, JSON.stringify({ i, pad: 'p'.repeat(100) }), {}], db));
        if (pending.length >= 200) {
            await Promise.all(pending.splice(0));
        }
    }
    await Promise.all(pending);
}

scenarios.flow = async c => {
    await fill(c, ['many'], 3000);
    const items = await c.list('createReadStream', {}, ['many'], 30);
    assert.strictEqual(items.length, 3000);
    items.forEach((item, i) => assert.strictEqual(item.key, `key-${String(i).padStart(6, '0')}`));
    assert.ok(c.lastStats.maxOutstanding <= 4, `at most 4 unacked, saw ${c.lastStats.maxOutstanding}`);
    assert.ok(c.lastStats.batches > 4, `several batches: ${c.lastStats.batches}`);
    const reversed = await c.list('createReadStream', { reverse: true, limit: 1500, keys: false }, ['many']);
    assert.strictEqual(reversed.length, 1500);
    assert.strictEqual(JSON.parse(reversed[0]).i, 2999);
};

scenarios.hangup = async c => {
    await fill(c, ['many'], 3000);
    const marker = await c.call('createReadStream', [{}], ['many']);
    const id = marker.$streamId;
    let batches = 0;
    let ended = false;
    await new Promise(resolve => {
        c.stream(marker).attach({
            onData: () => {
                batches += 1;
                // Like a listing that reached max-keys: hang up, forget, never ack.
                c.streams.delete(id);
                c.socket.emit('stream-hangup', { streamId: id });
                resolve();
            },
            onEnd: () => { ended = true; },
            onError: () => {},
        });
    });
    await new Promise(resolve => setTimeout(resolve, 500));
    // Data sent before the hangup arrived is at most the unacked window.
    assert.ok(c.unknownStreamData <= 3, `server kept sending: ${c.unknownStreamData}`);
    assert.ok(!ended);
    const before = c.unknownStreamData;
    await new Promise(resolve => setTimeout(resolve, 300));
    assert.strictEqual(c.unknownStreamData, before, 'nothing after the hangup settled');
    // Still serving, and a full listing still works.
    assert.ok(await c.call('get', ['key-000001', {}], ['many']));
    assert.strictEqual((await c.list('createReadStream', { limit: 10 }, ['many'])).length, 10);
    assert.strictEqual(batches, 1);
};

scenarios.noack = async c => {
    // More batches than the window of 4, so the producer waits for acks that never come.
    await fill(c, ['few'], 3000);
    const marker = await c.call('createReadStream', [{}], ['few']);
    const error = await new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('no stream-error after 8 s')), 8000);
        c.stream(marker).attach({
            onData: () => {}, // never acks
            onEnd: () => reject(new Error('stream ended without acks')),
            onError: err => { clearTimeout(timer); resolve(err); },
        });
    });
    assert.ok(String(error.description).includes('stream timeout'), JSON.stringify(error));
    assert.strictEqual((await c.list('createReadStream', {}, ['few'])).length, 3000);
};

scenarios.big = async c => {
    const value = JSON.stringify({ data: 'x'.repeat(10 * 1024 * 1024) });
    assert.strictEqual(await c.call('put', ['big', value, {}], ['bkt']), null);
    const got = await c.call('get', ['big', {}], ['bkt']);
    assert.strictEqual(got.length, value.length);
    assert.strictEqual(got, value);
    const [item] = await c.list('createReadStream', {}, ['bkt']);
    assert.strictEqual(item.value, value);
    const versioned = JSON.parse(await c.call('put', ['bigv', value, { versioning: true }], ['bkt']));
    assert.ok(versioned.versionId);
};

scenarios.malformed = async c => {
    const s = c.socket;
    const ackOf = (...args) => new Promise(resolve => s.emit(...args, (...answer) => resolve(answer)));
    const invalid = answer => assert.ok(errorIs(answer[0], 'InvalidArgument'), JSON.stringify(answer));
    invalid(await ackOf('call'));
    invalid(await ackOf('call', 'put'));
    invalid(await ackOf('call', 42, {}));
    invalid(await ackOf('call', 'put', 'not an object'));
    invalid(await ackOf('call', 'put', { rpcArgs: 'x' }));
    invalid(await ackOf('call', 'put', { rpcArgs: [1, 2], subLevel: ['b'] }));
    invalid(await ackOf('call', 'put', { rpcArgs: ['k'], subLevel: ['b'] }));
    invalid(await ackOf('call', 'put', { rpcArgs: ['k', '{}', 'opts'], subLevel: ['b'] }));
    invalid(await ackOf('call', 'put', { rpcArgs: ['k', '[1]', { versioning: true }], subLevel: ['b'] }));
    invalid(await ackOf('call', 'get', { rpcArgs: [{ k: 1 }], subLevel: ['b'] }));
    invalid(await ackOf('call', 'get', { rpcArgs: ['k'], subLevel: [1] }));
    invalid(await ackOf('call', 'get', { rpcArgs: ['k', { versionId: 7 }], subLevel: ['b'] }));
    invalid(await ackOf('call', 'createReadStream', { rpcArgs: [{ gt: 5 }], subLevel: ['b'] }));
    invalid(await ackOf('call', 'createReadStream', { rpcArgs: ['x'], subLevel: ['b'] }));
    invalid(await ackOf('call', 'put', { rpcArgs: [Buffer.from('k'), '{}'], subLevel: ['b'] }));
    invalid(await ackOf('garbage', { x: 1 }));
    invalid(await ackOf('call', 'nope', { rpcArgs: [] }));
    s.emit('garbage-no-ack', 1, 2, 3);
    s.emit('call', 'put', { rpcArgs: ['noack', '{}', {}], subLevel: ['b'] });
    s.emit('stream-hangup', 5);
    s.emit('stream-hangup', { streamId: 'no-such-stream' });
    s.emit('stream-data', { streamId: 'x', data: [] }, () => {});
    // Still serving, on this connection and a new one.
    assert.strictEqual(await c.call('put', ['ok', '{"fine":true}', {}], ['b']), null);
    assert.strictEqual(await c.call('get', ['ok', {}], ['b']), '{"fine":true}');
    assert.strictEqual(await c.call('get', ['noack', {}], ['b']), '{}');
    assert.deepStrictEqual(await c.call('get', ['ok', null], ['b']), '{"fine":true}');
};

scenarios.uuid = async c => {
    const uuid = await c.call('getUUID', []);
    const usage = await c.call('getDiskUsage', []);
    assert.ok(usage.total > 0 && usage.available <= usage.total && usage.free === usage.available,
        JSON.stringify(usage));
    console.log(`UUID ${uuid}`);
    console.log(`TOTAL ${usage.total}`);
};

// Against a store that reports memcached full: clear errors, and the server keeps serving.
scenarios.full = async c => {
    for (const [name, args] of [
        ['put', ['k', '{}', {}]],
        ['put', ['k', '{}', { versioning: true }]],
        ['get', ['k', {}]],
        ['del', ['k', { versionId: 'v' }]],
        ['createReadStream', [{}]],
        ['rawListKeys', [{}]],
    ]) {
        const wire = await expectError(c.call(name, args, ['b']), 'InternalError');
        assert.strictEqual(wire.code, 500);
        assert.ok(wire.description.includes('storage full'), `${name}: ${wire.description}`);
    }
    await scenarios.manifest(c);
};

// Writes that must survive a kill -9 of the sidecar and a restart: plain keys in a bucket and
// three versions of one key. persistRead checks them from a new process.
const PERSIST = ['persisted'];
scenarios.persistWrite = async c => {
    for (let i = 0; i < 200; i += 1) {
        await c.call('put', [`key/${String(i).padStart(4, '0')}`, objectMD(`key/${i}`), {}], PERSIST);
    }
    const versions = [];
    for (let i = 0; i < 3; i += 1) {
        const result = await c.call('put', ['versioned', objectMD('versioned', { n: i }), { versioning: true }], PERSIST);
        versions.push(JSON.parse(result).versionId);
    }
    console.log(`VERSIONS ${versions.join(',')}`);
};

scenarios.persistRead = async c => {
    const items = await c.list('createReadStream', { gte: 'key/', lt: 'key0' }, PERSIST);
    assert.strictEqual(items.length, 200);
    for (let i = 0; i < 200; i += 1) {
        assert.strictEqual(items[i].value, objectMD(`key/${i}`));
    }
    const versions = (await c.list('createReadStream', { gt: 'versioned\u0000', lt: 'versioned\u0001' }, PERSIST))
        .map(item => JSON.parse(item.value).n);
    assert.deepStrictEqual(versions, [2, 1, 0], 'newest version first');
    assert.strictEqual(JSON.parse(await c.call('get', ['versioned', {}], PERSIST)).n, 2);
};

async function main() {
    const run = scenarios[scenario];
    if (!run) {
        throw new Error(`unknown scenario ${scenario}`);
    }
    const client = new MetadataClient(port, generation, transports);
    try {
        await client.connected();
        await run(client);
        if (scenario === 'malformed') {
            const other = new MetadataClient(port, generation, transports);
            await other.connected();
            assert.strictEqual(await other.call('get', ['ok', {}], ['b']), '{"fine":true}');
            other.close();
        }
    } finally {
        client.close();
    }
    console.log(`PASS ${scenario}`);
}

main().then(() => process.exit(0), error => {
    console.log(`FAIL ${scenario}: ${error && error.stack ? error.stack : error}`);
    process.exit(1);
});
