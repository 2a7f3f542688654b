// Metadata load and checks for the fault tests (sidecar/tests/faults_*.rs):
//   node faults.js <port> <scenario> [args...]
// Prints what the Rust test needs (one record a line) and `PASS <scenario>`, or `FAIL ...`
// and exits 1. Values are derived from their key, so a checker knows what each key must hold.
'use strict';

const assert = require('assert');
const fs = require('fs');
const { MetadataClient, errorIs } = require('./client');

const [port, scenario, ...args] = process.argv.slice(2);
const MS = ['__metastore'];
const LOST = 'memcached lost its contents';

function bucketInfo(name, extra) {
    return JSON.stringify(Object.assign({
        name, owner: 'faults', creationDate: '2024-10-22T10:00:00.000Z',
        mdBucketModelVersion: 16, transient: false, deleted: false,
    }, extra || {}));
}

// The one value a key of the fault load may hold.
function valueOf(key) {
    return JSON.stringify({ key, 'content-length': key.length, pad: `${key}|`.repeat(8) });
}

function keyOf(n) {
    return `obj-${String(n).padStart(6, '0')}`;
}

function out(line) {
    process.stdout.write(`${line}\n`);
}

function sleep(ms) {
    return new Promise(resolve => setTimeout(resolve, ms));
}

async function expectError(promise, type, fragment) {
    try {
        await promise;
    } catch (error) {
        assert.ok(errorIs(error.wire, type), `expected ${type}, got ${error.message}`);
        const text = JSON.stringify(error.wire);
        assert.ok(!fragment || text.includes(fragment), `expected "${fragment}" in ${text}`);
        return;
    }
    throw new Error(`expected ${type}, got success`);
}

const scenarios = {};

// Writers and listers until the sidecar goes away (kill -9): `SENT key` before each put,
// `ACK key` after its ack; every listed entry is checked against its key's value on the spot.
scenarios.load = async c => {
    const [bucket, firstArg, writersArg] = args;
    await c.call('put', [bucket, bucketInfo(bucket), {}], MS);
    let next = Number(firstArg);
    const writers = Number(writersArg || 4);
    let stop = false;
    c.socket.on('disconnect', () => {
        stop = true;
        out('DISCONNECTED');
        process.exit(0);
    });
    const writer = async () => {
        while (!stop) {
            const key = keyOf(next);
            next += 1;
            out(`SENT ${key}`);
            await c.call('put', [key, valueOf(key), {}], [bucket]);
            out(`ACK ${key}`);
        }
    };
    const lister = async () => {
        while (!stop) {
            const items = await c.list('createReadStream', { gte: 'obj-', lt: 'obj.' }, [bucket]);
            for (const item of items) {
                if (item.value !== valueOf(item.key)) {
                    out(`BAD ${item.key}`);
                }
            }
            out(`LISTED ${items.length}`);
        }
    };
    await Promise.all([...Array(writers)].map(writer).concat([lister(), lister()]));
};

// Whether an error is the sidecar refusing (memcached down, cut off or emptied, a placement
// that disagrees): an InternalError, never a "not found" or any other answer.
function refusal(error) {
    return error.wire !== undefined && errorIs(error.wire, 'InternalError');
}

// A listing as `list` gives it, bounded in time: a stream that never ends is a hang.
function listWithin(c, options, bucket, ms) {
    return Promise.race([
        c.list('createReadStream', options, [bucket]),
        sleep(ms).then(() => { throw new Error(`listing gave no end within ${ms} ms`); }),
    ]);
}

// Puts, deletes, gets and listings through faults, until stdin closes (or SECONDS pass), keys
// from `keyOf(FIRST)` on in BUCKET (another load may write other keys of the same bucket).
// The log says what the sidecar acknowledged: `SENT key` before each put, `ACK key` after its
// ack, or `REFUSED key`; `DELSENT key`, then `DELACK key` or `DELREFUSED key` for deletes. A
// refusal (InternalError) is fine and leaves the write in doubt. Every answer is checked on the spot against the model, and anything else is
// a `BAD` line: a get of a key acknowledged and not being deleted gives its value; a listing of
// this load's keys holds every key acknowledged before it started and not deleted since, and
// only keys sent and not deleted before it started, each with its value; a key whose delete was
// acknowledged is "not found". Ends with counts, and FAIL when anything was BAD.
scenarios['load-faults'] = async c => {
    const [bucket, firstArg, writersArg, secondsArg] = args;
    const first = Number(firstArg);
    const range = { gte: keyOf(first), lt: keyOf(first + 100000) };
    const deadline = Date.now() + Number(secondsArg || 300) * 1000;
    for (;;) {
        try {
            await c.call('put', [bucket, bucketInfo(bucket), {}], MS);
            break;
        } catch (error) {
            assert.ok(refusal(error) && Date.now() < deadline, error.message);
            await sleep(100);
        }
    }
    let stop = false;
    process.stdin.on('end', () => { stop = true; });
    process.stdin.on('data', () => {});
    process.stdin.resume();
    const sent = new Set();
    const acked = [];
    const ackedSet = new Set();
    const delSent = new Set();
    const delAcked = new Set();
    const counts = { acked: 0, refused: 0, deleted: 0, delRefused: 0, gets: 0, getRefused: 0,
        listings: 0, listRefused: 0, bad: 0 };
    const bad = line => {
        counts.bad += 1;
        out(`BAD ${line}`);
    };
    const running = () => !stop && Date.now() < deadline;
    // After a refusal, a pause: a refusing sidecar answers at once and the others need the CPU.
    const pause = () => sleep(20);
    const pick = () => acked[Math.floor(Math.random() * acked.length)];
    let next = first;
    const writer = async () => {
        while (running()) {
            const key = keyOf(next);
            next += 1;
            sent.add(key);
            out(`SENT ${key}`);
            try {
                await c.call('put', [key, valueOf(key), {}], [bucket]);
                acked.push(key);
                ackedSet.add(key);
                counts.acked += 1;
                out(`ACK ${key}`);
            } catch (error) {
                if (!refusal(error)) {
                    bad(`put ${key}: ${error.message}`);
                }
                counts.refused += 1;
                out(`REFUSED ${key}`);
                await pause();
            }
        }
    };
    const deleter = async () => {
        while (running()) {
            await sleep(30);
            const key = acked.length > 0 ? pick() : undefined;
            if (key === undefined || delSent.has(key)) {
                continue;
            }
            delSent.add(key);
            out(`DELSENT ${key}`);
            try {
                await c.call('del', [key, {}], [bucket]);
                delAcked.add(key);
                counts.deleted += 1;
                out(`DELACK ${key}`);
            } catch (error) {
                if (!refusal(error)) {
                    bad(`del ${key} (acknowledged, not deleted before): ${error.message}`);
                }
                counts.delRefused += 1;
                out(`DELREFUSED ${key}`);
                await pause();
            }
        }
    };
    const getter = async () => {
        while (running()) {
            const key = acked.length > 0 ? pick() : undefined;
            if (key === undefined) {
                await sleep(10);
                continue;
            }
            const deletedBefore = delAcked.has(key);
            try {
                const value = await c.call('get', [key, {}], [bucket]);
                counts.gets += 1;
                if (value !== valueOf(key)) {
                    bad(`get ${key} answered other bytes`);
                } else if (deletedBefore) {
                    bad(`get ${key} answered a key whose delete was acknowledged`);
                }
            } catch (error) {
                if (errorIs(error.wire, 'ObjNotFound')) {
                    if (!delSent.has(key)) {
                        bad(`get ${key} (acknowledged, never deleted): not found`);
                    }
                } else if (refusal(error)) {
                    counts.getRefused += 1;
                    await pause();
                } else {
                    bad(`get ${key}: ${error.message}`);
                }
            }
        }
    };
    const lister = async () => {
        while (running()) {
            const mustHave = acked.filter(key => !delSent.has(key));
            const deletedBefore = new Set(delAcked);
            let items;
            try {
                items = await listWithin(c, range, bucket, 30000);
            } catch (error) {
                const wire = error.wire || (/stream error (.*)$/.exec(error.message) || [])[1];
                const parsed = typeof wire === 'string' ? JSON.parse(wire) : wire;
                if (!parsed || !errorIs(parsed, 'InternalError')) {
                    bad(`listing: ${error.message}`);
                }
                counts.listRefused += 1;
                await pause();
                continue;
            }
            counts.listings += 1;
            const listed = new Set();
            for (const item of items) {
                listed.add(item.key);
                if (!sent.has(item.key)) {
                    bad(`listing holds ${item.key}, never sent`);
                } else if (deletedBefore.has(item.key)) {
                    bad(`listing holds ${item.key}, whose delete was acknowledged before`);
                } else if (item.value !== valueOf(item.key)) {
                    bad(`listing holds ${item.key} with other bytes`);
                }
            }
            for (const key of mustHave) {
                if (!listed.has(key) && !delSent.has(key)) {
                    bad(`listing misses ${key}, acknowledged before it started`);
                }
            }
            out(`LISTED ${items.length}`);
        }
    };
    const writers = [...Array(Number(writersArg || 3))].map(writer);
    await Promise.all(writers.concat([deleter(), getter(), lister()]));
    out(`COUNTS ${JSON.stringify(counts)}`);
    assert.strictEqual(counts.bad, 0, `${counts.bad} bad answers`);
};

// After the faults: every `ACK` key of the file (not deleted since: `DELSENT`) is readable with
// its value, and every `DELACK` key is not found; the listing of the keys is the model's: it
// holds every such acknowledged key, and only keys sent and not acknowledged deleted, each
// with its value. Prints what is wrong key by key (MISSING, WRONG, STILL, BADLISTED,
// NOTLISTED), then the counts: LOST (acknowledged, not readable), UNLISTED, UNDELETED (a
// delete acknowledged, the key still there) and HALF (listed, never sent, deleted or with
// other bytes).
scenarios.verify = async c => {
    const [bucket, file] = args;
    const lines = fs.readFileSync(file, 'utf8').split('\n');
    const tagged = tag => lines.filter(l => l.startsWith(`${tag} `)).map(l => l.slice(tag.length + 1));
    const sent = new Set(tagged('SENT'));
    const delSent = new Set(tagged('DELSENT'));
    const delAcked = new Set(tagged('DELACK'));
    const acked = tagged('ACK').filter(key => !delSent.has(key));
    let lost = 0;
    for (const key of acked) {
        try {
            if (await c.call('get', [key, {}], [bucket]) !== valueOf(key)) {
                lost += 1;
                out(`WRONG ${key}`);
            }
        } catch (error) {
            lost += 1;
            out(`MISSING ${key}: ${error.message}`);
        }
    }
    let undeleted = 0;
    for (const key of delAcked) {
        try {
            await c.call('get', [key, {}], [bucket]);
            undeleted += 1;
            out(`STILL ${key}`);
        } catch (error) {
            if (!errorIs(error.wire, 'ObjNotFound')) {
                undeleted += 1;
                out(`STILL ${key}: ${error.message}`);
            }
        }
    }
    let half = 0;
    const items = await c.list('createReadStream', { gte: 'obj-', lt: 'obj.' }, [bucket]);
    const listed = new Set();
    for (const item of items) {
        listed.add(item.key);
        if (!sent.has(item.key) || delAcked.has(item.key) || item.value !== valueOf(item.key)) {
            half += 1;
            out(`BADLISTED ${item.key}`);
        }
    }
    const unlisted = acked.filter(key => !listed.has(key));
    for (const key of unlisted) {
        out(`NOTLISTED ${key}`);
    }
    out(`ACKED ${acked.length} LISTED ${items.length}`);
    out(`LOST ${lost}`);
    out(`UNLISTED ${unlisted.length}`);
    out(`UNDELETED ${undeleted}`);
    out(`HALF ${half}`);
};

// Plain and versioned keys for the warm-restart test.
scenarios.populate = async c => {
    const [count] = args;
    await c.call('put', ['wb', bucketInfo('wb'), {}], MS);
    await c.call('put', ['vb', bucketInfo('vb', { versioningConfiguration: { Status: 'Enabled' } }), {}], MS);
    for (let n = 0; n < Number(count); n += 1) {
        await c.call('put', [keyOf(n), valueOf(keyOf(n)), {}], ['wb']);
    }
    for (let n = 0; n < 3; n += 1) {
        await c.call('put', ['doc.txt', JSON.stringify({ n }), { versioning: true }], ['vb']);
    }
};

// Every database of `populate`, listed in full, as one line of JSON to compare across restarts.
scenarios.snapshot = async c => {
    const all = {};
    for (const db of ['__metastore', 'wb', 'vb']) {
        all[db] = await c.list('createReadStream', {}, [db]);
    }
    const master = await c.call('get', ['doc.txt', {}], ['vb']);
    out(`SNAPSHOT ${JSON.stringify({ all, master })}`);
};

// memcached lost its contents: gets, puts and listings get a clear InternalError.
scenarios['expect-lost'] = async c => {
    await expectError(c.call('get', [keyOf(0), {}], ['wb']), 'InternalError', LOST);
    await expectError(c.call('get', ['wb', {}], MS), 'InternalError', LOST);
    await expectError(c.call('put', ['x', '{}', {}], ['wb']), 'InternalError', LOST);
    await expectError(c.call('createReadStream', [{}], ['wb']), 'InternalError', LOST);
};

// Every call is refused (the store's placement disagrees with --memcached): InternalError
// carrying the given text, for reads, writes and listings alike.
scenarios['expect-refused'] = async c => {
    const [text] = args;
    await expectError(c.call('get', [keyOf(0), {}], ['wb']), 'InternalError', text);
    await expectError(c.call('get', ['wb', {}], MS), 'InternalError', text);
    await expectError(c.call('put', ['x', '{}', {}], ['wb']), 'InternalError', text);
    await expectError(c.call('del', [keyOf(1), {}], ['wb']), 'InternalError', text);
    await expectError(c.call('createReadStream', [{}], ['wb']), 'InternalError', text);
};

// A small database for the storage-full test.
scenarios['full-setup'] = async c => {
    await c.call('put', ['fb', bucketInfo('fb'), {}], MS);
    for (let n = 0; n < 50; n += 1) {
        await c.call('put', [keyOf(n), valueOf(keyOf(n)), {}], ['fb']);
    }
};

// memcached is full: puts are accepted until the first refusal, which must say "storage
// full"; then gets and listings still work and show exactly the accepted puts.
scenarios['full-refused'] = async c => {
    let accepted = 0;
    let refused = false;
    for (let n = 1000; n < 3000 && !refused; n += 1) {
        try {
            await c.call('put', [keyOf(n), valueOf(keyOf(n)), {}], ['fb']);
            accepted += 1;
        } catch (error) {
            assert.ok(errorIs(error.wire, 'InternalError'), error.message);
            assert.ok(JSON.stringify(error.wire).includes('storage full'), error.message);
            refused = true;
        }
    }
    assert.ok(refused, 'metadata puts never refused');
    assert.strictEqual(await c.call('get', [keyOf(7), {}], ['fb']), valueOf(keyOf(7)));
    // A delete writes new pages too: refused with "storage full" or done, never half done.
    let deleted = 0;
    try {
        await c.call('del', [keyOf(1), {}], ['fb']);
        deleted = 1;
    } catch (error) {
        assert.ok(JSON.stringify(error.wire).includes('storage full'), error.message);
    }
    const items = await c.list('createReadStream', {}, ['fb']);
    assert.strictEqual(items.length, 50 + accepted - deleted,
        'listing shows exactly the accepted puts and deletes');
    accepted -= deleted;
    for (const item of items) {
        assert.strictEqual(item.value, valueOf(item.key));
    }
    out(`ACCEPTED ${accepted}`);
};

// After space was freed: puts and deletes work again and every key is there.
scenarios['full-recovered'] = async c => {
    const [acceptedArg] = args;
    for (let n = 5000; n < 5005; n += 1) {
        await c.call('put', [keyOf(n), valueOf(keyOf(n)), {}], ['fb']);
    }
    await c.call('del', [keyOf(5000), {}], ['fb']);
    const items = await c.list('createReadStream', {}, ['fb']);
    assert.strictEqual(items.length, 50 + Number(acceptedArg) + 4);
    for (const item of items) {
        assert.strictEqual(item.value, valueOf(item.key));
    }
};

// The value of a key of the `full-acked` load: about 2 KiB.
function sizedValueOf(key) {
    return JSON.stringify({ key, pad: `${key}|`.repeat(180) });
}

function isFull(error) {
    return error.wire !== undefined && JSON.stringify(error.wire).includes('storage full');
}

// Buckets for `full-acked`, created while memcached has room.
scenarios['full-acked-setup'] = async c => {
    const [bucketsArg] = args;
    for (let b = 0; b < Number(bucketsArg); b += 1) {
        await c.call('put', [`fa${b}`, bucketInfo(`fa${b}`), {}], MS);
    }
};

// Writers on every bucket at once for SECONDS while memcached fills up (the Rust side writes
// blobs meanwhile): each put is acknowledged or refused with "storage full". A bucket gets at
// most KEYS keys, then its writers rewrite them: the tree stays one inline root record of some
// tens of KiB, so that every put replaces the root record with a CAS that needs a new item of
// that size, which a full memcached refuses. Readers check acknowledged keys all along; at the
// end every acknowledged key must read back with its value and each bucket's full listing must
// hold exactly the acknowledged keys. Prints `ACKED n`, `REFUSED n`, `BAD n`, and
// `MISSING`/`WRONG`/`EXTRA`/`UNLISTED`/`ERROR` lines for what went wrong.
scenarios['full-acked'] = async c => {
    const [bucketsArg, writersArg, secondsArg, keysArg] = args;
    const buckets = [...Array(Number(bucketsArg))].map((_, b) => `fa${b}`);
    const acked = new Map(buckets.map(bucket => [bucket, new Set()]));
    const deadline = Date.now() + Number(secondsArg) * 1000;
    let refused = 0;
    let bad = 0;
    const check = async (bucket, key, when) => {
        try {
            const value = await c.call('get', [key, {}], [bucket]);
            if (value !== sizedValueOf(key)) {
                bad += 1;
                out(`WRONG ${when} ${bucket}/${key}`);
            }
        } catch (error) {
            bad += 1;
            out(`MISSING ${when} ${bucket}/${key}: ${error.message}`);
        }
    };
    const writer = async (bucket, b, w) => {
        let n = w;
        while (Date.now() < deadline) {
            const key = keyOf(b * 1000 + (n % Number(keysArg)));
            n += 1;
            try {
                await c.call('put', [key, sizedValueOf(key), {}], [bucket]);
                acked.get(bucket).add(key);
            } catch (error) {
                if (isFull(error)) {
                    refused += 1;
                    // Not a busy loop: the blob uploads and the readers need the CPU too.
                    await sleep(10);
                } else {
                    bad += 1;
                    out(`ERROR put ${bucket}/${key}: ${error.message}`);
                }
            }
        }
    };
    const reader = async () => {
        let round = 0;
        while (Date.now() < deadline) {
            const bucket = buckets[round % buckets.length];
            const keys = [...acked.get(bucket)];
            round += 1;
            if (keys.length === 0) {
                await sleep(5);
                continue;
            }
            await check(bucket, keys[(round * 7919) % keys.length], 'during');
        }
    };
    const writers = [];
    buckets.forEach((bucket, b) => {
        for (let w = 0; w < Number(writersArg); w += 1) {
            writers.push(writer(bucket, b, w));
        }
    });
    await Promise.all(writers.concat([reader(), reader()]));

    let total = 0;
    for (const bucket of buckets) {
        const keys = acked.get(bucket);
        total += keys.size;
        for (const key of keys) {
            await check(bucket, key, 'after');
        }
        const items = await c.list('createReadStream', {}, [bucket]);
        const expected = new Set(keys);
        for (const item of items) {
            if (!expected.delete(item.key) || item.value !== sizedValueOf(item.key)) {
                bad += 1;
                out(`EXTRA ${bucket}/${item.key}`);
            }
        }
        for (const key of expected) {
            bad += 1;
            out(`UNLISTED ${bucket}/${key}`);
        }
    }
    out(`ACKED ${total}`);
    out(`REFUSED ${refused}`);
    out(`BAD ${bad}`);
};

// After space was freed: a put in every bucket of `full-acked` works again (retried while
// memcached reassigns its freed memory), and each listing holds its old keys plus the new one.
scenarios['full-acked-recovered'] = async c => {
    const [bucketsArg, ackedArg, secondsArg] = args;
    const start = Date.now();
    const deadline = start + Number(secondsArg) * 1000;
    let listed = 0;
    for (let b = 0; b < Number(bucketsArg); b += 1) {
        const bucket = `fa${b}`;
        const key = keyOf(b * 1000 + 999);
        for (;;) {
            try {
                await c.call('put', [key, sizedValueOf(key), {}], [bucket]);
                break;
            } catch (error) {
                assert.ok(isFull(error) && Date.now() < deadline, error.message);
                await sleep(100);
            }
        }
        assert.strictEqual(await c.call('get', [key, {}], [bucket]), sizedValueOf(key));
        const items = await c.list('createReadStream', {}, [bucket]);
        for (const item of items) {
            assert.strictEqual(item.value, sizedValueOf(item.key));
        }
        listed += items.length;
    }
    assert.strictEqual(listed, Number(ackedArg) + Number(bucketsArg));
    out(`RECOVERED ${Date.now() - start}`);
};

// Many keys, then a listing that is never acknowledged; prints HOLDING and waits to be killed.
scenarios['hold-listing'] = async c => {
    const [count] = args;
    await c.call('put', ['lb', bucketInfo('lb'), {}], MS);
    const puts = [];
    for (let n = 0; n < Number(count); n += 1) {
        puts.push(c.call('put', [keyOf(n), valueOf(keyOf(n)), {}], ['lb']));
        if (puts.length === 50) {
            await Promise.all(puts.splice(0));
        }
    }
    await Promise.all(puts);
    const marker = await c.call('createReadStream', [{}], ['lb']);
    let batches = 0;
    c.stream(marker).attach({
        onData: () => { batches += 1; },
        onEnd: () => out('ENDED'),
        onError: () => out('ERRORED'),
    });
    while (batches === 0) {
        await sleep(20);
    }
    out('HOLDING');
    await sleep(60000);
};

async function main() {
    const run = scenarios[scenario];
    if (!run) {
        throw new Error(`unknown scenario ${scenario}`);
    }
    const client = new MetadataClient(port, '4');
    try {
        await client.connected();
        await run(client);
    } finally {
        client.close();
    }
    out(`PASS ${scenario}`);
}

main().then(() => process.exit(0), error => {
    out(`FAIL ${scenario}: ${error && error.stack ? error.stack : error}`);
    process.exit(1);
});
