// Many calls on one key at once, over the metadata RPC, against one sidecar or several sharing
// one memcached:
//   node hotkey.js <case> <port>[,<port>...] [<seed>]
// Every case first builds the history of a cleaned-up versioned bucket on key `/`: an object
// put before versioning, versions with ACL updates and delete markers, then a suspended
// bucket's null master. Then many calls run at once, spread over the sidecars:
//   del50     `del` of every version (the null master first), 50 in flight, each after a
//             `get` of that version, as one DeleteObjects does;
//   put50     50 versioned puts;
//   mix       puts of given versions (ACLs), delete markers, dels of versions, gets;
//   random    random waves of the mix's calls with random concurrency (seeded);
//   buckets   300 buckets created then deleted, 50 at a time (the bucket list's databases).
// Every call must succeed. The key's items must then equal a model that applies the same calls
// one at a time in the order they were acknowledged (version ids of puts as the sidecar gave
// them). Two cases remain open to the interleaving, and the check takes that into account:
// which put's value holds the master when puts were in flight together (the newest version id
// of one sidecar; of any sidecar's last when several), and a placeholder's fresh version id.
// Then `get` answers the latest version as the model resolves it.
// Prints `PASS <case> (<ms> ms)` or `FAIL <case>: ...`.
'use strict';

const { MetadataClient, errorIs } = require('./client');

const [caseName, portList, seedArg] = process.argv.slice(2);
const ports = String(portList || '').split(',').filter(Boolean);
const KEY = '/';
const DB = ['hot-key-bucket'];
const SCRATCH = 'version-id-source';

// A small deterministic generator, so that a failing random history can be replayed.
function generator(seed) {
    let state = (Number(seed) >>> 0) || 1;
    return () => {
        state ^= state << 13;
        state >>>= 0;
        state ^= state >>> 17;
        state ^= state << 5;
        state >>>= 0;
        return state / 4294967296;
    };
}

const objectMD = extra => JSON.stringify(Object.assign({
    key: KEY, 'content-length': 1, 'content-md5': 'c4ca4238a0b923820dcc509a6f75849b',
    acl: { Canned: 'private', FULL_CONTROL: [], WRITE_ACP: [], READ: [], READ_ACP: [] },
}, extra || {}));

const versionKey = vid => `${KEY}\u0000${vid}`;
const NULL_KEY = `${KEY}\u0000`;
const inRange = key => key === KEY || key.startsWith(NULL_KEY);
// Textual appends, as the server stores them (section 3.9).
const appendField = (value, text) => {
    const inner = value.trimEnd().slice(0, -1);
    return `${inner}${inner.trimEnd().endsWith('{') ? '' : ','}${text}}`;
};
const withVersionId = (value, vid) => appendField(value, `"versionId":${JSON.stringify(vid)}`);
const info = value => JSON.parse(value);
const isPlaceholder = value => value !== undefined && info(value).isPHD === true;
const PHD = 'placeholder';

// The key's items as the versioning rules leave them, one call at a time.
class Model {
    constructor(items) {
        this.items = new Map(items);
    }

    // `put` with `{versioning: true}` (or `{versionId: ''}`), answered with `vid`.
    putVersioned(value, vid, withVersionKey) {
        const stored = withVersionId(value, vid);
        this.items.set(KEY, stored);
        if (withVersionKey) {
            this.items.set(versionKey(vid), stored);
        }
    }

    // `put` with `{versionId: V}` (no isNull): the version, and the master unless it is newer.
    putVersion(value, vid) {
        this.items.set(versionKey(vid), value);
        const master = this.items.get(KEY);
        if (master === undefined) {
            this.items.set(KEY, value);
            return;
        }
        // A placeholder's id is fresh: newer than every version written before it.
        const masterVid = master === PHD ? '' : (info(master).versionId || '\uffff');
        if (masterVid >= vid) {
            this.items.set(KEY, value);
        }
    }

    // `del` with `{versionId: V}` (`isNull`: the null key holds it).
    delVersion(vid, isNull) {
        this.items.delete(isNull ? NULL_KEY : versionKey(vid));
        const master = this.items.get(KEY);
        if (master !== undefined && (master === PHD || info(master).versionId === vid)) {
            this.items.set(KEY, PHD);
        }
    }

    // What `get` answers: the master, or for a placeholder the newest version left (the null
    // key in the place its own id gives it); undefined for ObjNotFound.
    latest() {
        const master = this.items.get(KEY);
        if (master !== PHD) {
            return master;
        }
        const versions = [...this.items.entries()].filter(([key]) => key !== KEY)
            .map(([key, value]) => [key === NULL_KEY ? versionKey(info(value).versionId) : key, value])
            .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
        return versions.length > 0 ? versions[0][1] : undefined;
    }
}

function describe(error) {
    const wire = error && error.wire;
    if (wire && typeof wire === 'object') {
        return `${wire.type || wire.message} ${wire.code}: ${JSON.stringify(wire.description)}`;
    }
    return String(error && error.message ? error.message : error);
}

// The sidecars' clients; call `i` goes to client `i` modulo their number.
class Cluster {
    constructor(clients) {
        this.clients = clients;
        this.acks = 0;
        this.failures = [];
    }

    // One call; resolves {answer, error, sent, acked, sidecar}: `sent` and `acked` count the
    // acks seen before the call left and when its own came.
    async call(index, name, args, db) {
        const sidecar = index % this.clients.length;
        const sent = this.acks;
        try {
            const answer = await this.clients[sidecar].call(name, args, db || DB);
            this.acks += 1;
            return { answer, sent, acked: this.acks, sidecar };
        } catch (error) {
            this.acks += 1;
            return { error, sent, acked: this.acks, sidecar };
        }
    }

    // Every item of the key, in order.
    async items() {
        const listed = await this.clients[0].list('createReadStream',
            { gte: KEY, lt: `${KEY}\u0001` }, DB);
        return listed.map(({ key, value }) => [key, value]).filter(([key]) => inRange(key));
    }
}

const vidOf = answer => JSON.parse(answer).versionId;

// The history: a pre-versioning object, a version of a given id over it (CloudServer keeps
// the old object as the null key), 100 versions with ACL updates and delete markers, then the
// suspended bucket's null master. Returns the ids of the versions, newest first.
async function history(cluster) {
    const c = cluster.clients[0];
    await c.call('put', [KEY, objectMD({ legacy: true }), {}], DB);
    const given = vidOf(await c.call('put', [SCRATCH, '{}', { versioning: true }], DB));
    await c.call('put', [KEY, objectMD({ given: true }), { versionId: given, isNull: false }], DB);
    for (let n = 0; n < 100; n += 1) {
        const deleteMarker = n % 20 === 19;
        const vid = vidOf(await c.call('put', [KEY, objectMD({ n, isDeleteMarker: deleteMarker }),
            { versioning: true }], DB));
        if (n % 10 === 3) {
            const acl = objectMD({ n, acl: { Canned: 'public-read' }, versionId: vid });
            await c.call('put', [KEY, acl, { versionId: vid }], DB);
        }
    }
    await c.call('put', [KEY, objectMD({ suspended: true, isNull: true }),
        { versionId: '', isNull: true, deleteNullKey: true }], DB);
    const items = await cluster.items();
    return items.filter(([key]) => key.startsWith(NULL_KEY) && key !== NULL_KEY)
        .map(([key]) => key.slice(NULL_KEY.length));
}

// Compare the key's items with the model's; `masters` are the values the master may hold
// when puts raced (undefined: only the model's).
function compare(problems, actual, model, masters) {
    const want = model.items;
    const got = new Map(actual);
    for (const [key, value] of want) {
        const have = got.get(key);
        if (key === KEY) {
            const ok = value === PHD ? isPlaceholder(have)
                : (masters ? masters.includes(have) : have === value);
            if (!ok) {
                problems.push(`master is ${JSON.stringify(have)}, the model says ${JSON.stringify(value)}`);
            }
        } else if (have !== value) {
            problems.push(`${JSON.stringify(key)} is ${JSON.stringify(have)}, the model says ${JSON.stringify(value)}`);
        }
    }
    for (const key of got.keys()) {
        if (!want.has(key)) {
            problems.push(`${JSON.stringify(key)} is left, the model has no such item`);
        }
    }
}

// Apply `done` (calls with their outcome) to the model in the order they were acknowledged.
function replay(model, done) {
    for (const call of [...done].sort((a, b) => a.acked - b.acked)) {
        call.apply(model, call);
    }
}

// The masters the key may hold after versioned puts that raced: on each sidecar its newest
// version id committed last; which sidecar's came last is the interleaving's to decide.
function racedMasters(done) {
    const newest = new Map();
    for (const call of done.filter(c => c.masterValue)) {
        const best = newest.get(call.sidecar);
        if (!best || call.vid < best.vid) {
            newest.set(call.sidecar, call);
        }
    }
    return [...newest.values()].map(call => call.masterValue);
}

// Calls, as functions of (cluster, index) that run one and return its record with `apply`.
const calls = {
    delVersion: (vid, isNull) => async (cluster, index) => {
        const options = isNull ? { versionId: vid, isNull: true } : { versionId: vid };
        // CloudServer reads the version it is about to delete.
        await cluster.call(index, 'get', [KEY, { versionId: vid }]);
        const outcome = await cluster.call(index, 'del', [KEY, options]);
        return Object.assign(outcome, {
            what: `del ${vid}`, apply: model => model.delVersion(vid, isNull),
        });
    },
    putVersioned: (n, deleteMarker) => async (cluster, index) => {
        const value = objectMD({ wave: n, isDeleteMarker: deleteMarker });
        const outcome = await cluster.call(index, 'put', [KEY, value, { versioning: true }]);
        const vid = outcome.error ? undefined : vidOf(outcome.answer);
        return Object.assign(outcome, {
            what: `versioned put ${n}`, vid, masterValue: vid && withVersionId(value, vid),
            apply: model => model.putVersioned(value, vid, true),
        });
    },
    putVersion: (vid, n) => async (cluster, index) => {
        const value = objectMD({ acl: { Canned: 'authenticated-read', n }, versionId: vid });
        const outcome = await cluster.call(index, 'put', [KEY, value, { versionId: vid }]);
        return Object.assign(outcome, {
            what: `put of version ${vid}`, written: value, apply: model => model.putVersion(value, vid),
        });
    },
    get: options => async (cluster, index) => {
        const outcome = await cluster.call(index, 'get', [KEY, options]);
        if (outcome.error && errorIs(outcome.error.wire, 'ObjNotFound')) {
            outcome.error = undefined;
            outcome.answer = undefined;
        }
        return Object.assign(outcome, { what: `get ${JSON.stringify(options)}`, apply: () => {}, read: true });
    },
};

// Run `wave` (call makers), `inFlight` at a time (default: all at once), in order; the
// failures are problems.
async function runWave(cluster, wave, problems, inFlight) {
    const done = [];
    let next = 0;
    const worker = async () => {
        while (next < wave.length) {
            const index = next;
            next += 1;
            done.push(await wave[index](cluster, index));
        }
    };
    await Promise.all(Array.from({ length: Math.min(inFlight || wave.length, wave.length) }, worker));
    for (const call of done) {
        if (call.error) {
            problems.push(`${call.what} failed: ${describe(call.error)}`);
        }
    }
    return done.filter(call => !call.error);
}

// A wave of the mix: given-version puts of some versions, dels of others (the master's own
// only when `delMaster`, and never put as well), delete markers and gets. Each version is the
// target of one call at most, so that the wave's effect does not depend on the order in which
// its calls apply, but for which delete marker ends as the master.
function mixWave(vids, master, delMaster, count, random, wave) {
    const targets = vids.filter(vid => vid !== master || delMaster)
        .map(vid => [random(), vid]).sort((a, b) => a[0] - b[0]).map(([, vid]) => vid);
    const makers = [];
    let next = 0;
    for (let i = 0; i < count; i += 1) {
        const roll = random();
        const target = targets[next];
        if (roll < 0.3 && target !== undefined && target !== master) {
            makers.push(calls.putVersion(target, wave));
            next += 1;
        } else if (roll < 0.6 && target !== undefined) {
            makers.push(calls.delVersion(target, false));
            next += 1;
        } else if (roll < 0.75) {
            makers.push(calls.putVersioned(`${wave}.${i}`, true));
        } else if (roll < 0.9 || vids.length === 0) {
            makers.push(calls.get({}));
        } else {
            makers.push(calls.get({ versionId: vids[Math.floor(random() * vids.length)] }));
        }
    }
    return makers;
}

// A get must answer a value the key held before the wave or one a call of the wave wrote
// (or ObjNotFound while a delete was in flight): which one depends on when it ran.
function checkGets(problems, done, before, after) {
    const possible = new Set([before.latest(), after.latest()]);
    for (const [key, value] of before.items) {
        if (key !== KEY || value !== PHD) {
            possible.add(value);
        }
    }
    for (const call of done) {
        possible.add(call.masterValue);
        possible.add(call.written);
    }
    for (const call of done.filter(c => c.read)) {
        if (call.answer !== undefined && !possible.has(call.answer)) {
            problems.push(`${call.what} answered ${JSON.stringify(call.answer)}, which the key never held`);
        }
    }
}

// Many buckets created, then deleted, at once, as CloudServer keeps its bucket list (one
// `__metastore` entry and one `users..bucket` entry per bucket): every call succeeds, and the
// owner's listing holds exactly the buckets that exist.
async function buckets(cluster) {
    const problems = [];
    const owner = 'a1b2c3d4e5f6'.repeat(5);
    const names = Array.from({ length: 300 }, (_, i) => `hot-bucket-${String(i).padStart(4, '0')}`);
    const userKey = name => `${owner}..|..${name}`;
    const bucketMD = (name, extra) => JSON.stringify(Object.assign({ name, owner, transient: false, deleted: false },
        extra || {}));
    const step = (index, name, args, db) => async () => {
        const outcome = await cluster.call(index, name, args, db);
        if (outcome.error) {
            problems.push(`${name} ${JSON.stringify(args[0])} in ${db} failed: ${describe(outcome.error)}`);
        }
    };
    const run = async makers => {
        let next = 0;
        await Promise.all(Array.from({ length: 50 }, async () => {
            while (next < makers.length) {
                const index = next;
                next += 1;
                await makers[index](index);
            }
        }));
    };
    const listed = async () => (await cluster.clients[0].list('createReadStream',
        { gte: `${owner}..|..`, lt: `${owner}..|./` }, ['users..bucket'])).map(({ key }) => key);
    await run(names.map(name => async index => {
        await step(index, 'put', [name, bucketMD(name, { transient: true }), {}], ['__metastore'])();
        await step(index, 'put', [userKey(name), '{"creationDate":"2026-12-07T00:00:00.000Z"}', {}],
            ['users..bucket'])();
        await step(index, 'put', [name, bucketMD(name), {}], ['__metastore'])();
    }));
    const created = await listed();
    if (created.join() !== names.map(userKey).join()) {
        problems.push(`after creating, the owner's listing holds ${created.length} of ${names.length} buckets`);
    }
    await run(names.map(name => async index => {
        await step(index, 'put', [name, bucketMD(name, { deleted: true }), {}], ['__metastore'])();
        await step(index, 'del', [userKey(name), {}], ['users..bucket'])();
        await step(index, 'del', [name, {}], ['__metastore'])();
    }));
    const left = await listed();
    if (left.length > 0) {
        problems.push(`after deleting, the owner's listing still holds ${left.length} buckets`);
    }
    return problems;
}

async function runCase(cluster, name, random) {
    if (name === 'buckets') {
        return buckets(cluster);
    }
    const problems = [];
    const vids = await history(cluster);
    const model = new Model(await cluster.items());
    const masterVid = info(model.items.get(KEY)).versionId;
    const waves = [];
    if (name === 'del50') {
        // One DeleteObjects of every version listed, newest first, 50 in flight.
        waves.push([calls.delVersion(masterVid, true), ...vids.map(vid => calls.delVersion(vid, false))]);
    } else if (name === 'put50') {
        waves.push(Array.from({ length: 50 }, (_, i) => calls.putVersioned(i, false)));
    } else if (name === 'mix') {
        waves.push(() => mixWave(vids, masterVid, false, 150, random, 0));
    } else if (name === 'random') {
        for (let wave = 0; wave < 6; wave += 1) {
            waves.push(() => {
                const left = [...model.items.keys()].filter(key => key.startsWith(NULL_KEY) && key !== NULL_KEY)
                    .map(key => key.slice(NULL_KEY.length));
                const master = model.items.get(KEY);
                const current = master && master !== PHD ? info(master).versionId : undefined;
                return mixWave(left, current, random() < 0.5, 1 + Math.floor(random() * 50), random, wave);
            });
        }
    } else {
        throw new Error(`unknown case ${name}`);
    }
    for (const planned of waves) {
        const wave = typeof planned === 'function' ? planned() : planned;
        const before = new Model(model.items);
        const done = await runWave(cluster, wave, problems, 50);
        replay(model, done);
        checkGets(problems, done, before, model);
        let masters;
        if (done.some(call => call.masterValue)) {
            masters = racedMasters(done);
            // From now on the model's master is the one the key holds, if it is one of those.
            const actual = new Map(await cluster.items()).get(KEY);
            if (masters.includes(actual)) {
                model.items.set(KEY, actual);
            }
        }
        compare(problems, await cluster.items(), model, masters);
        if (problems.length > 0) {
            break;
        }
    }
    // A get answers the latest version, and repairs a placeholder master to it.
    if (problems.length === 0) {
        const get = await calls.get({})(cluster, 0);
        const latest = model.latest();
        if (get.error || get.answer !== latest) {
            problems.push(`get answered ${get.error ? describe(get.error) : JSON.stringify(get.answer)}, `
                + `the model's latest is ${JSON.stringify(latest)}`);
        }
    }
    return problems;
}

async function main() {
    if (!caseName || ports.length === 0) {
        throw new Error('usage: node hotkey.js <case> <port>[,<port>...] [<seed>]');
    }
    const seed = seedArg || String(Date.now() % 100000);
    const clients = [];
    for (const port of ports) {
        const client = new MetadataClient(port, '4', ['websocket']);
        await client.connected();
        clients.push(client);
    }
    const started = Date.now();
    let problems;
    try {
        problems = await runCase(new Cluster(clients), caseName, generator(seed));
    } finally {
        clients.forEach(client => client.close());
    }
    const ms = Date.now() - started;
    if (problems.length > 0) {
        console.log(`FAIL ${caseName} (seed ${seed}, ${ms} ms):\n  ${problems.slice(0, 20).join('\n  ')}`);
        return 1;
    }
    console.log(`PASS ${caseName} (seed ${seed}, ${ms} ms)`);
    return 0;
}

main().then(code => process.exit(code), error => {
    console.log(`FAIL: ${error && error.stack ? error.stack : error}`);
    process.exit(1);
});
