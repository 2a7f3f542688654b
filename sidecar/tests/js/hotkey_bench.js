// One hot key benchmark driver, through the real socket.io 4.x client (benches/hot_key.rs):
//   node hotkey_bench.js PORT load                 1000 other keys of 1 KiB in the bucket
//   node hotkey_bench.js PORT put INFLIGHT SECS    versioned puts of key `/`, INFLIGHT at once
//   node hotkey_bench.js PORT versions 0 SECS      versions of `/` for a dels phase of SECS
//   node hotkey_bench.js PORT del INFLIGHT SECS    dels of those versions, INFLIGHT at once
//   node hotkey_bench.js PORT alone 0 SECS         no hot key calls (other keys only)
// Meanwhile one more connection gets and puts random other keys of the bucket, one call at a
// time. Prints `HOT <ok> <failed> <seconds>` and `OTHER <gets> <get p99 ms> <puts> <put p99 ms>`.
'use strict';

const { connectAll } = require('./client');

const [port, phase, inflightArg, secsArg] = process.argv.slice(2);
const BUCKET = ['hot-bench'];
const HOT = '/';
const OTHERS = 1000;
const VALUE = JSON.stringify({ pad: 'x'.repeat(1000) });
const otherKey = i => `other/${String(i).padStart(6, '0')}`;

const p99 = samples => {
    if (samples.length === 0) {
        return NaN;
    }
    const sorted = [...samples].sort((a, b) => a - b);
    return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.99))];
};

// Calls of `one` from `inflight` loops until `until` (ms) or until `one` answers false.
async function loops(clients, inflight, until, one) {
    let ok = 0;
    let failed = 0;
    let firstError;
    await Promise.all(Array.from({ length: inflight }, async (_, i) => {
        const client = clients[i % clients.length];
        while (Date.now() < until) {
            try {
                if ((await one(client)) === false) {
                    return;
                }
                ok += 1;
            } catch (error) {
                failed += 1;
                firstError = firstError || error.message;
            }
        }
    }));
    return { ok, failed, firstError };
}

// Gets and puts of random other keys, one at a time, until `stop()`: their latencies.
async function others(client, stop) {
    const gets = [];
    const puts = [];
    while (!stop()) {
        const key = otherKey(Math.floor(Math.random() * OTHERS));
        let started = process.hrtime.bigint();
        await client.call('get', [key, {}], BUCKET);
        gets.push(Number(process.hrtime.bigint() - started) / 1e6);
        started = process.hrtime.bigint();
        await client.call('put', [key, VALUE, {}], BUCKET);
        puts.push(Number(process.hrtime.bigint() - started) / 1e6);
    }
    return { gets, puts };
}

async function main() {
    const inflight = Number(inflightArg || 1);
    const secs = Number(secsArg || 5);
    // Up to 50 hot connections (one per call in flight, as CloudServer processes have), and
    // one for the other keys.
    const clients = await connectAll(port, Math.max(1, inflight) + 1);
    const quiet = clients.pop();
    if (phase === 'load') {
        for (let i = 0; i < OTHERS; i += 50) {
            await Promise.all(Array.from({ length: 50 }, (_, j) => quiet.call('put', [otherKey(i + j), VALUE, {}], BUCKET)));
        }
        clients.concat([quiet]).forEach(client => client.close());
        return;
    }
    if (phase === 'versions') {
        // Enough versions of `/` for a dels phase of `secs`, put 50 at a time.
        for (let i = 0; i < 1000 * secs; i += 50) {
            await Promise.all(Array.from({ length: 50 },
                (_, j) => clients[j % clients.length].call('put', [HOT, VALUE, { versioning: true }], BUCKET)));
        }
        clients.concat([quiet]).forEach(client => client.close());
        return;
    }
    // The versions to delete, newest first (as a version listing gives them, and a
    // DeleteObjects of it deletes them: each leaves a placeholder master), popped from the end.
    const versions = [];
    if (phase === 'del') {
        const listed = await quiet.list('createReadStream', { gte: `${HOT}\u0000`, lt: `${HOT}\u0001` }, BUCKET);
        versions.push(...listed.map(({ key }) => key.slice(HOT.length + 1)).reverse());
    }
    let done = false;
    const quietRun = others(quiet, () => done);
    const started = process.hrtime.bigint();
    const until = Date.now() + secs * 1000;
    let hot = { ok: 0, failed: 0 };
    if (phase === 'put') {
        hot = await loops(clients, inflight, until,
            client => client.call('put', [HOT, VALUE, { versioning: true }], BUCKET));
    } else if (phase === 'del') {
        hot = await loops(clients, inflight, until, async client => {
            const vid = versions.pop();
            if (vid === undefined) {
                return false;
            }
            await client.call('del', [HOT, { versionId: vid }], BUCKET);
            return true;
        });
    } else if (phase === 'alone') {
        await new Promise(resolve => setTimeout(resolve, secs * 1000));
    } else {
        throw new Error(`unknown phase ${phase}`);
    }
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    done = true;
    const { gets, puts } = await quietRun;
    clients.concat([quiet]).forEach(client => client.close());
    console.log(`HOT ${hot.ok} ${hot.failed} ${seconds}`);
    console.log(`OTHER ${gets.length} ${p99(gets).toFixed(2)} ${puts.length} ${p99(puts).toFixed(2)}`);
    if (hot.firstError) {
        console.log(`ERROR ${hot.firstError}`);
    }
}

main().then(() => process.exit(0), error => {
    console.error(error && error.stack ? error.stack : error);
    process.exit(1);
});
