// Metadata half of the soak run (benches/soak.rs): fixed concurrency of puts, gets and listings.
//   node soak.js PORT CLIENTS SECONDS INTERVAL_SECONDS KEYS
// Loads KEYS keys into bucket "soak", prints `READY`, then runs CLIENTS loops for SECONDS and
// prints one `SAMPLE <index> <json>` line per interval and a final `TOTAL <json>`, where the json
// maps each operation kind to {ops, errors, p50, p95, p99, max} (latencies in milliseconds);
// TOTAL also has `reasons`, failed operations counted by error message.
// Percentiles are computed here so that only a few numbers per interval cross the pipe.
'use strict';

const { connectAll } = require('./client');

const [port, clientsArg, secondsArg, intervalArg, keysArg] = process.argv.slice(2);
const CLIENTS = Number(clientsArg);
const SECONDS = Number(secondsArg);
const INTERVAL = Number(intervalArg);
const KEYS = Number(keysArg);
const BUCKET = ['soak'];
const LISTING = 100;
const KINDS = ['md_put', 'md_get', 'md_list'];

const keyOf = i => `object/${String(i).padStart(8, '0')}`;
// Values of 200 B to 4 KiB, like object metadata with and without user metadata.
const valueOf = i => JSON.stringify({ i, pad: 'x'.repeat(200 + ((i * 7919) % 3900)) });

const fresh = () => Object.fromEntries(KINDS.map(kind => [kind, { latencies: [], errors: 0 }]));

function summary(stats) {
    const out = {};
    for (const kind of KINDS) {
        const { latencies, errors } = stats[kind];
        latencies.sort((a, b) => a - b);
        const at = q => (latencies.length
            ? latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] : 0);
        out[kind] = {
            ops: latencies.length,
            errors,
            p50: at(0.5),
            p95: at(0.95),
            p99: at(0.99),
            max: latencies.length ? latencies[latencies.length - 1] : 0,
        };
    }
    return out;
}

async function main() {
    const clients = await connectAll(port, CLIENTS);
    // Load in parallel over all connections, so that gets and listings find keys from the start.
    let next = 0;
    await Promise.all(clients.map(async client => {
        while (next < KEYS) {
            const i = next;
            next += 1;
            await client.call('put', [keyOf(i), valueOf(i), {}], BUCKET);
        }
    }));
    console.log('READY');

    let interval = fresh();
    const total = fresh();
    // Why operations failed, by message, for the report.
    const reasons = {};
    let index = 0;
    const timer = setInterval(() => {
        console.log(`SAMPLE ${index} ${JSON.stringify(summary(interval))}`);
        index += 1;
        interval = fresh();
    }, INTERVAL * 1000);
    const deadline = Date.now() + SECONDS * 1000;
    const random = n => Math.floor(Math.random() * n);
    const operations = {
        md_put: c => { const i = random(KEYS); return c.call('put', [keyOf(i), valueOf(i), {}], BUCKET); },
        md_get: c => c.call('get', [keyOf(random(KEYS)), {}], BUCKET),
        md_list: async c => {
            const items = await c.list('createReadStream',
                { gte: keyOf(random(KEYS - LISTING)), limit: LISTING }, BUCKET);
            // client.js keeps every stream proxy for late consumers; this loop has none, and
            // keeping them would grow the driver's heap by every listed item.
            c.proxies.clear();
            if (items.length !== LISTING) {
                throw new Error(`listing gave ${items.length} items`);
            }
        },
    };
    await Promise.all(clients.map(async (client, n) => {
        // A fixed mix per step: 4 puts, 4 gets, 2 listings out of 10, in a per-client order.
        const mix = ['md_put', 'md_get', 'md_put', 'md_get', 'md_list'];
        let step = n;
        while (Date.now() < deadline) {
            const kind = mix[step % mix.length];
            step += 1;
            const started = process.hrtime.bigint();
            try {
                await operations[kind](client);
                const ms = Number(process.hrtime.bigint() - started) / 1e6;
                interval[kind].latencies.push(ms);
                total[kind].latencies.push(ms);
            } catch (error) {
                const reason = `${kind}: ${String(error && error.message).slice(0, 80)}`;
                reasons[reason] = (reasons[reason] || 0) + 1;
                interval[kind].errors += 1;
                total[kind].errors += 1;
                // A broken connection would otherwise spin on instant failures.
                await new Promise(resolve => setTimeout(resolve, 100));
            }
        }
    }));
    clearInterval(timer);
    console.log(`SAMPLE ${index} ${JSON.stringify(summary(interval))}`);
    console.log(`TOTAL ${JSON.stringify({ ...summary(total), reasons })}`);
    clients.forEach(client => client.close());
}

main().then(() => process.exit(0), error => {
    console.error(error && error.stack ? error.stack : error);
    process.exit(1);
});
