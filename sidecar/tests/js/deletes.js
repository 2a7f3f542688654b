// Delete cases for the ordered store, over the metadata RPC:
//   node deletes.js <port> <generation 2|4> <case>...   (`all` runs every case)
// Each case writes into its own sublevels (fresh names; the bucket-list case uses CloudServer's
// `__metastore` and `users..bucket`), deletes, and after each phase checks that `get` and
// `createReadStream` agree with what the server acknowledged: every put and del must succeed,
// acknowledged keys are listed in order with their values, deleted keys are neither listed
// nor found (ObjNotFound). Prints `PASS <case> (<ms> ms)` or `FAIL <case> (<ms> ms): ...`
// naming the phase, key and error of the first problems of each kind; exits 1 when any case
// failed. The cases run one after the other, so a failing one does not hide the others.
'use strict';

const { MetadataClient, errorIs } = require('./client');

const [port, generation, ...caseNames] = process.argv.slice(2);

const OWNER = '79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be';
const MS = ['__metastore'];
const UB = ['users..bucket'];
// Calls in flight while checking with gets, and for puts where a case does not say.
const CHECK_IN_FLIGHT = 64;
const PUT_IN_FLIGHT = 32;
// Examples kept per kind of problem (and the last one); the rest are only counted.
const EXAMPLES = 3;

const pad5 = i => String(i).padStart(5, '0');

// A JSON value of exactly `size` bytes (ASCII) naming its key, so that a value listed under the
// wrong key shows.
function valueOf(key, size) {
    const bare = JSON.stringify({ key, pad: '' });
    return JSON.stringify({ key, pad: 'x'.repeat(Math.max(0, size - bare.length)) });
}

// What the server stores for a versioned put: the value with its versionId appended (3.9).
function withVersionId(value, versionId) {
    return `${value.slice(0, -1)},"versionId":"${versionId}"}`;
}

function describe(error) {
    const wire = error && error.wire;
    if (wire && typeof wire === 'object') {
        return `${wire.type || wire.message} ${wire.code}: ${JSON.stringify(wire.description)}`;
    }
    return String(error && error.message ? error.message : error);
}

const byteOrder = (a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b));

// Run `fn(item, index)` over `items` with at most `inFlight` calls pending, started in order.
async function inPool(items, inFlight, fn) {
    let next = 0;
    const worker = async () => {
        while (next < items.length) {
            const index = next;
            next += 1;
            await fn(items[index], index);
        }
    };
    await Promise.all(Array.from({ length: Math.max(1, Math.min(inFlight, items.length)) }, worker));
}

// The problems of one case, counted by kind, with the first few kept as examples.
class Report {
    constructor() {
        this.kinds = new Map();
    }

    problem(kind, key, detail) {
        let entry = this.kinds.get(kind);
        if (!entry) {
            entry = { count: 0, examples: [] };
            this.kinds.set(kind, entry);
        }
        entry.count += 1;
        const example = key === undefined ? detail : `key ${JSON.stringify(key)}: ${detail}`;
        if (entry.examples.length < EXAMPLES) {
            entry.examples.push(example);
        } else {
            entry.last = example;
        }
    }

    get failed() {
        return this.kinds.size > 0;
    }

    toString() {
        const lines = [];
        for (const [kind, { count, examples, last }] of this.kinds) {
            lines.push(`  ${kind}: ${count}`);
            for (const example of examples) {
                lines.push(`    e.g. ${example}`);
            }
            if (last !== undefined) {
                lines.push(`    last ${last}`);
            }
        }
        return lines.join('\n');
    }
}

// One sublevel and what the server acknowledged in it: `live` key → value, `gone` keys whose
// del was acknowledged, `unsure` keys whose put or del failed (either state is accepted).
class Db {
    constructor(c, report, subLevel) {
        this.c = c;
        this.report = report;
        this.subLevel = subLevel;
        this.live = new Map();
        this.gone = new Set();
        this.unsure = new Set();
    }

    get label() {
        return JSON.stringify(this.subLevel);
    }

    // A key whose write failed: its state is unknown from now on.
    forget(key) {
        this.live.delete(key);
        this.gone.delete(key);
        this.unsure.add(key);
    }

    async put(phase, key, value, options) {
        try {
            const result = await this.c.call('put', [key, value, options || {}], this.subLevel);
            this.live.set(key, value);
            this.gone.delete(key);
            this.unsure.delete(key);
            return result;
        } catch (error) {
            this.forget(key);
            this.report.problem(`${phase}: put in ${this.label} failed`, key, describe(error));
            return undefined;
        }
    }

    async del(phase, key, options) {
        try {
            const result = await this.c.call('del', [key, options || {}], this.subLevel);
            this.live.delete(key);
            this.gone.add(key);
            this.unsure.delete(key);
            return result;
        } catch (error) {
            this.forget(key);
            this.report.problem(`${phase}: del in ${this.label} failed`, key, describe(error));
            return undefined;
        }
    }

    async putAll(phase, keys, size, inFlight) {
        await inPool(keys, inFlight, key => this.put(phase, key, valueOf(key, size)));
    }

    async delAll(phase, keys, inFlight) {
        await inPool(keys, inFlight, key => this.del(phase, key));
    }

    // A listing; on a stream error the problem is reported and `undefined` returned.
    async list(phase, options) {
        try {
            return await this.c.list('createReadStream', options, this.subLevel);
        } catch (error) {
            this.report.problem(`${phase}: createReadStream ${JSON.stringify(options)} on ${this.label} failed`,
                undefined, describe(error));
            return undefined;
        }
    }

    // The listing of `options` (default: the whole sublevel) against the model.
    async checkListing(phase, options, inRange) {
        const items = await this.list(phase, options || {});
        if (!items) {
            return;
        }
        const where = `${phase}: createReadStream ${JSON.stringify(options || {})} on ${this.label}`;
        const listed = new Set();
        let previous;
        for (const { key, value } of items) {
            if (previous !== undefined && byteOrder(previous, key) >= 0) {
                this.report.problem(`${where} out of order`, key, `after ${JSON.stringify(previous)}`);
            }
            previous = key;
            listed.add(key);
            if (this.live.has(key)) {
                if (value !== this.live.get(key)) {
                    this.report.problem(`${where} lists a wrong value`, key,
                        `${JSON.stringify(String(value).slice(0, 80))}...`);
                }
            } else if (!this.unsure.has(key)) {
                this.report.problem(`${where} lists a key that is ${this.gone.has(key) ? 'deleted' : 'unknown'}`,
                    key, `listed with ${JSON.stringify(String(value).slice(0, 80))}`);
            }
        }
        for (const key of this.live.keys()) {
            if (!listed.has(key) && (!inRange || inRange(key))) {
                this.report.problem(`${where} misses an acknowledged key`, key, 'not listed');
            }
        }
    }

    // Every live key is found with its value; every deleted key answers ObjNotFound.
    async checkGets(phase) {
        const live = [...this.live.entries()];
        await inPool(live, CHECK_IN_FLIGHT, async ([key, value]) => {
            try {
                const got = await this.c.call('get', [key, {}], this.subLevel);
                if (got !== value) {
                    this.report.problem(`${phase}: get in ${this.label} answers a wrong value`, key,
                        `${JSON.stringify(String(got).slice(0, 80))}...`);
                }
            } catch (error) {
                this.report.problem(`${phase}: get of a live key in ${this.label} failed`, key, describe(error));
            }
        });
        await inPool([...this.gone], CHECK_IN_FLIGHT, key => this.expectNotFound(phase, key, {}));
    }

    async expectNotFound(phase, key, options) {
        const what = options.versionId ? `get of a deleted version in ${this.label}`
            : `get of a deleted key in ${this.label}`;
        try {
            const got = await this.c.call('get', [key, options], this.subLevel);
            this.report.problem(`${phase}: ${what} found it`, key, `${JSON.stringify(String(got).slice(0, 80))}...`);
        } catch (error) {
            if (!errorIs(error.wire, 'ObjNotFound')) {
                this.report.problem(`${phase}: ${what} did not answer ObjNotFound`, key, describe(error));
            }
        }
    }

    // Once everything was deleted the listing must be `[]`, failed dels or not: how many
    // keys are left says how far from it the store is.
    async expectEmpty(phase, options) {
        const listing = `createReadStream ${JSON.stringify(options || {})} on ${this.label}`;
        const items = await this.list(phase, options || {});
        if (items && items.length > 0) {
            this.report.problem(`${phase}: ${listing} is not []`, undefined,
                `${items.length} keys left, from ${JSON.stringify(items[0].key)} to `
                + `${JSON.stringify(items[items.length - 1].key)}`);
        }
    }

    async check(phase) {
        await this.checkListing(phase);
        await this.checkGets(phase);
    }
}

// Put `count` keys of `size` bytes, check, del them in key order `inFlight` at a time, check.
function putThenDelInOrder(name, count, size, putInFlight, delInFlight) {
    return async (c, report) => {
        const db = new Db(c, report, [name]);
        const keys = Array.from({ length: count }, (_, i) => `list/${pad5(i)}`);
        await db.putAll('put', keys, size, putInFlight);
        await db.check('after the puts');
        await db.delAll('del in order', keys, delInFlight);
        await db.check('after the dels');
        await db.expectEmpty('after the dels');
        await db.expectEmpty('after the dels', { gte: 'list/', lt: 'list0' });
    };
}

const cases = {
    // The sequences reported failing: one sublevel, keys in order, dels one call at a time
    // or many in flight.
    'seq-1203x600': putThenDelInOrder('del-seq-1203', 1203, 600, PUT_IN_FLIGHT, 1),
    'inflight50-1203x600': putThenDelInOrder('del-inflight-1203', 1203, 600, PUT_IN_FLIGHT, 50),
    'seq-3000x100': putThenDelInOrder('del-seq-3000', 3000, 100, PUT_IN_FLIGHT, 1),
    'inflight16-5000x1500': putThenDelInOrder('del-inflight-5000', 5000, 1500, 16, 16),
    'seq-80x1000': putThenDelInOrder('del-seq-80', 80, 1000, 1, 1),
    'seq-60x1000': putThenDelInOrder('del-seq-60', 60, 1000, 1, 1),
    'seq-50x1000': putThenDelInOrder('del-seq-50', 50, 1000, 1, 1),

    // Every second key, then the rest from the last down.
    'alternate-then-reverse-2000': async (c, report) => {
        const db = new Db(c, report, ['del-alternate-2000']);
        const keys = Array.from({ length: 2000 }, (_, i) => `list/${pad5(i)}`);
        await db.putAll('put', keys, 300, PUT_IN_FLIGHT);
        await db.check('after the puts');
        await db.delAll('del of every second key', keys.filter((_, i) => i % 2 === 0), 1);
        await db.check('after deleting every second key');
        await db.delAll('del of the rest in reverse', keys.filter((_, i) => i % 2 === 1).reverse(), 1);
        await db.check('after the dels');
        await db.expectEmpty('after the dels');
    },

    // The per-account bucket list as CloudServer keeps it (4.2, 4.3, 4.5): each bucket has a
    // `__metastore` entry and a `users..bucket` entry `<owner>..|..<bucket>`; creating puts
    // them, deleting marks the bucket deleted, dels the user entry, then the metastore entry.
    'bucket-list-1000': async (c, report) => {
        const ms = new Db(c, report, MS);
        const ub = new Db(c, report, UB);
        const info = (name, extra) => JSON.stringify(Object.assign({
            acl: { Canned: 'private', FULL_CONTROL: [], WRITE: [], WRITE_ACP: [], READ: [], READ_ACP: [] },
            name, owner: OWNER, ownerDisplayName: 'bart', creationDate: '2024-10-22T10:00:00.000Z',
            mdBucketModelVersion: 16, transient: false, deleted: false,
        }, extra || {}));
        const names = Array.from({ length: 1000 }, (_, i) => `bucket-${pad5(i)}`);
        const userKey = name => `${OWNER}..|..${name}`;
        const prefix = `${OWNER}..|..`;
        const range = { gte: prefix, lt: `${OWNER}..|./` };
        const inRange = key => key.startsWith(prefix);
        await ms.put('startup', 'users..bucket', info('users..bucket'));
        await inPool(names, PUT_IN_FLIGHT, async name => {
            await ms.put('create bucket', name, info(name, { transient: true }));
            await ub.put('create bucket', userKey(name),
                JSON.stringify({ creationDate: '2024-10-22T10:00:00.000Z', ingestion: null }));
            await ms.put('create bucket', name, info(name));
        });
        await ms.check('after creating the buckets');
        await ub.check('after creating the buckets');
        await ub.checkListing('after creating the buckets, ListBuckets', range, inRange);
        for (const name of names) {
            await ms.put('delete bucket', name, info(name, { deleted: true }));
            await ub.del('delete bucket', userKey(name));
            await ms.del('delete bucket', name);
        }
        await ub.checkListing('after deleting the buckets, ListBuckets', range, inRange);
        await ub.check('after deleting the buckets');
        await ub.expectEmpty('after deleting the buckets, ListBuckets', range);
        await ub.expectEmpty('after deleting the buckets');
        await ms.check('after deleting the buckets');
    },

    // A versioned bucket: two versions of each object, then every version deleted by id,
    // newest first. A version delete leaves a placeholder master, which the next get repairs
    // (to the remaining version, or away when none is left); the listing must then hold no
    // master other than that.
    'versioned-1000x2': async (c, report) => {
        const db = new Db(c, report, ['del-versioned-1000']);
        const objects = Array.from({ length: 1000 }, (_, i) => ({ key: `obj/${pad5(i)}`, vids: [] }));
        const versionKey = (object, vid) => `${object.key}\u0000${vid}`;
        await inPool(objects, PUT_IN_FLIGHT, async object => {
            for (const n of [1, 2]) {
                const value = valueOf(`${object.key} v${n}`, 300);
                try {
                    const answer = await c.call('put', [object.key, value, { versioning: true }], db.subLevel);
                    const { versionId } = JSON.parse(answer);
                    const stored = withVersionId(value, versionId);
                    object.vids.push(versionId);
                    db.live.set(object.key, stored);
                    db.live.set(versionKey(object, versionId), stored);
                } catch (error) {
                    db.forget(object.key);
                    report.problem('versioned put failed', object.key, describe(error));
                    return;
                }
            }
        });
        // Objects with both versions acknowledged; `[older, newer]` ids.
        const complete = objects.filter(object => object.vids.length === 2);
        await db.check('after the versioned puts');
        await inPool(complete, CHECK_IN_FLIGHT, async object => {
            const older = versionKey(object, object.vids[0]);
            try {
                const got = await c.call('get', [object.key, { versionId: object.vids[0] }], db.subLevel);
                if (got !== db.live.get(older)) {
                    report.problem('after the versioned puts: get of the older version answers a wrong value',
                        older, JSON.stringify(String(got).slice(0, 80)));
                }
            } catch (error) {
                report.problem('after the versioned puts: get of the older version failed', older,
                    describe(error));
            }
        });

        // Answers whether the del of version `vid` was acknowledged; the master is then a
        // placeholder until repaired, so its state is unknown to the model.
        const delVersion = async (phase, object, vid) => {
            const key = versionKey(object, vid);
            try {
                const answer = await c.call('del', [object.key, { versionId: vid }], db.subLevel);
                if (answer !== `{"versionId":"${vid}"}`) {
                    report.problem(`${phase}: del answered`, key, JSON.stringify(answer));
                }
                db.live.delete(key);
                db.gone.add(key);
                db.forget(object.key);
                return true;
            } catch (error) {
                db.forget(key);
                db.forget(object.key);
                report.problem(`${phase}: del of a version failed`, key, describe(error));
                return false;
            }
        };

        // The newest version of each object, in key order, 16 in flight.
        const newestGone = [];
        await inPool(complete, 16, async object => {
            if (await delVersion('del of the newest versions', object, object.vids[1])) {
                newestGone.push(object);
            }
        });
        await checkPlaceholders(db, report, 'after deleting the newest versions', newestGone);
        // A get answers the older version and repairs the master to it.
        await inPool(newestGone, CHECK_IN_FLIGHT, async object => {
            const older = db.live.get(versionKey(object, object.vids[0]));
            try {
                const got = await c.call('get', [object.key, {}], db.subLevel);
                if (got !== older) {
                    report.problem('after deleting the newest versions: get of the master is not the older version',
                        object.key, JSON.stringify(String(got).slice(0, 80)));
                }
                db.live.set(object.key, older);
                db.unsure.delete(object.key);
            } catch (error) {
                report.problem('after deleting the newest versions: get of the master failed', object.key,
                    describe(error));
            }
        });
        await db.check('after deleting the newest versions and getting the masters');

        // Then the older version of each object, one call at a time in key order.
        const allGone = [];
        for (const object of newestGone) {
            if (await delVersion('del of the older versions', object, object.vids[0])) {
                allGone.push(object);
            }
        }
        await checkPlaceholders(db, report, 'after deleting every version', allGone);
        // No version left: a get answers ObjNotFound and removes the placeholder.
        for (const object of allGone) {
            db.unsure.delete(object.key);
            db.gone.add(object.key);
        }
        await db.checkGets('after deleting every version');
        await inPool(allGone, CHECK_IN_FLIGHT, async object => {
            for (const versionId of object.vids) {
                await db.expectNotFound('after deleting every version', object.key, { versionId });
            }
        });
        await db.checkListing('after deleting every version and getting the masters');
        await db.expectEmpty('after deleting every version and getting the masters');
        await db.expectEmpty('after deleting every version and getting the masters', { gte: 'obj/', lt: 'obj0' });
    },
};

// Right after version deletes, before any get: each object's master is either a placeholder
// (`isPHD`, a versionId other than the deleted one) or, if the server repaired it already,
// the newest remaining version; no version key that was deleted is listed.
async function checkPlaceholders(db, report, phase, objects) {
    const items = await db.list(phase, {});
    if (!items) {
        return;
    }
    const listed = new Map(items.map(({ key, value }) => [key, value]));
    for (const object of objects) {
        const master = listed.get(object.key);
        const remaining = object.vids.map(vid => `${object.key}\u0000${vid}`).filter(k => db.live.has(k));
        if (master === undefined) {
            if (remaining.length > 0) {
                report.problem(`${phase}: master missing while a version remains`, object.key, 'not listed');
            }
            continue;
        }
        const isPlaceholder = /^\{ "isPHD": true, "versionId": "[^"]+" \}$/.test(master)
            && !object.vids.includes(JSON.parse(master).versionId);
        const repaired = remaining.length > 0 && master === db.live.get(remaining[0]);
        if (!isPlaceholder && !repaired) {
            report.problem(`${phase}: wrong master`, object.key, JSON.stringify(master.slice(0, 120)));
        }
        for (const vid of object.vids) {
            const versionKey = `${object.key}\u0000${vid}`;
            if (db.gone.has(versionKey) && listed.has(versionKey)) {
                report.problem(`${phase}: deleted version listed`, versionKey, 'listed');
            }
            if (db.live.has(versionKey) && listed.get(versionKey) !== db.live.get(versionKey)) {
                report.problem(`${phase}: remaining version missing or wrong`, versionKey,
                    JSON.stringify(String(listed.get(versionKey)).slice(0, 80)));
            }
        }
    }
}

async function main() {
    const names = caseNames.length === 1 && caseNames[0] === 'all' ? Object.keys(cases) : caseNames;
    const unknown = names.filter(name => !cases[name]);
    if (names.length === 0 || unknown.length > 0) {
        throw new Error(`unknown or no cases ${JSON.stringify(unknown)}; known: ${Object.keys(cases).join(' ')}`);
    }
    let failures = 0;
    for (const name of names) {
        const client = new MetadataClient(port, generation);
        const report = new Report();
        const started = Date.now();
        try {
            await client.connected();
            await cases[name](client, report);
        } catch (error) {
            report.problem('the case stopped', undefined, error && error.stack ? error.stack : String(error));
        } finally {
            client.close();
        }
        const ms = Date.now() - started;
        if (report.failed) {
            failures += 1;
            console.log(`FAIL ${name} (${ms} ms):\n${report}`);
        } else {
            console.log(`PASS ${name} (${ms} ms)`);
        }
    }
    return failures;
}

main().then(failures => process.exit(failures ? 1 : 0), error => {
    console.log(`FAIL: ${error && error.stack ? error.stack : error}`);
    process.exit(1);
});
