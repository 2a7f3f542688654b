// Metadata benchmark driver: one phase per run, through the real socket.io 4.x client.
//   node bench.js PORT load KEYS          put KEYS keys of 1 KiB into bucket "bench"
//   node bench.js PORT put CLIENTS COUNT  COUNT puts spread over CLIENTS connections
//   node bench.js PORT get CLIENTS COUNT  COUNT gets of loaded keys
//   node bench.js PORT list CLIENTS COUNT COUNT listings of 1000 keys
//   node bench.js PORT fill CLIENTS SECS  puts of fresh 1 KiB values into bucket "space" for
//                                         SECS seconds; also prints `LIVE <value bytes>`
//   node bench.js PORT timeline SECS      one client, a put then a get of a fresh key, one call
//                                         at a time, for SECS seconds; prints a line
//                                         `CALL <ms since start> <put|get> <ms taken> <ok|err>`
//                                         per call (benches/hang.rs bins them by second)
// Prints one line `OPS <operations> <seconds>`; benches/metadata.rs reads memcached's counters
// around each run.
'use strict';

const { connectAll } = require('./client');

const [port, phase, first, second] = process.argv.slice(2);
const BUCKET = ['bench'];
const VALUE = JSON.stringify({ pad: 'x'.repeat(1000) });

const keyOf = i => `object/${String(i).padStart(8, '0')}`;

async function run(clients, count, one) {
    let next = 0;
    const started = process.hrtime.bigint();
    await Promise.all(clients.map(async client => {
        for (;;) {
            const i = next;
            next += 1;
            if (i >= count) {
                return;
            }
            await one(client, i);
        }
    }));
    return Number(process.hrtime.bigint() - started) / 1e9;
}

async function main() {
    const keys = Number(process.env.BENCH_KEYS || 100000);
    let clients;
    let seconds;
    let operations;
    if (phase === 'fill') {
        clients = await connectAll(port, Number(first));
        const until = Date.now() + Number(second) * 1000;
        const fresh = () => `space/${Math.random().toString(16).slice(2, 10)}${Math.random().toString(16).slice(2, 10)}`;
        let done = 0;
        const started = process.hrtime.bigint();
        await Promise.all(clients.map(async client => {
            while (Date.now() < until) {
                await client.call('put', [fresh(), VALUE, {}], ['space']);
                done += 1;
            }
        }));
        seconds = Number(process.hrtime.bigint() - started) / 1e9;
        operations = done;
        console.log(`LIVE ${done * VALUE.length}`);
    } else if (phase === 'timeline') {
        clients = await connectAll(port, 1);
        const [client] = clients;
        const started = Date.now();
        const until = started + Number(first) * 1000;
        const timed = async (op, call) => {
            const at = Date.now();
            let outcome = 'ok';
            try {
                await call();
            } catch (error) {
                outcome = 'err';
            }
            console.log(`CALL ${at - started} ${op} ${Date.now() - at} ${outcome}`);
        };
        operations = 0;
        for (let i = 0; Date.now() < until; i += 1) {
            const key = `timeline/${String(i).padStart(8, '0')}`;
            await timed('put', () => client.call('put', [key, VALUE, {}], BUCKET));
            await timed('get', () => client.call('get', [key, {}], BUCKET));
            operations += 2;
        }
        seconds = (Date.now() - started) / 1000;
    } else if (phase === 'load') {
        operations = Number(first);
        clients = await connectAll(port, 32);
        seconds = await run(clients, operations, (c, i) => c.call('put', [keyOf(i), VALUE, {}], BUCKET));
    } else {
        clients = await connectAll(port, Number(first));
        operations = Number(second);
        const random = () => Math.floor(Math.random() * keys);
        const phases = {
            put: (c, i) => c.call('put', [keyOf(random()), VALUE, {}], BUCKET),
            get: c => c.call('get', [keyOf(random()), {}], BUCKET),
            list: async c => {
                const start = Math.floor(Math.random() * (keys - 1000));
                const items = await c.list('createReadStream', { gte: keyOf(start), limit: 1000 }, BUCKET);
                if (items.length !== 1000) {
                    throw new Error(`listing gave ${items.length} items`);
                }
            },
        };
        if (!phases[phase]) {
            throw new Error(`unknown phase ${phase}`);
        }
        seconds = await run(clients, operations, phases[phase]);
    }
    clients.forEach(client => client.close());
    console.log(`OPS ${operations} ${seconds}`);
}

main().then(() => process.exit(0), error => {
    console.error(error && error.stack ? error.stack : error);
    process.exit(1);
});
