// A metadata client that behaves like Arsenal's (lib/network/rpc): `call` events with an ack,
// sio-stream consumption (register on the call's ack, ack each stream-data, hang up when done).
'use strict';

function load(generation) {
    if (generation === '2') {
        return require('sio2');
    }
    if (generation === '4') {
        return require('sio4');
    }
    throw new Error(`unknown socket.io generation ${generation}`);
}

class MetadataClient {
    constructor(port, generation, transports) {
        const io = load(generation);
        this.socket = io(`http://127.0.0.1:${port}/MDFile/metadata`, {
            transports: transports || ['polling', 'websocket'],
            reconnection: false,
            forceNew: true,
        });
        // Streams the server may still send on, and every proxy made (for late consumers).
        this.streams = new Map();
        this.proxies = new Map();
        // stream-data for a stream we do not know: dropped without ack, like Arsenal.
        this.unknownStreamData = 0;
        this.socket.on('stream-data', (payload, ack) => {
            const stream = this.streams.get(payload && payload.streamId);
            if (!stream) {
                this.unknownStreamData += 1;
                return;
            }
            stream.onData(payload.data, ack);
        });
        this.socket.on('stream-end', (payload, ack) => {
            const stream = this.streams.get(payload && payload.streamId);
            if (ack) {
                ack(null);
            }
            if (stream) {
                this.streams.delete(payload.streamId);
                stream.onEnd();
            }
        });
        this.socket.on('stream-error', payload => {
            const stream = this.streams.get(payload && payload.streamId);
            if (stream) {
                this.streams.delete(payload.streamId);
                stream.onError(payload.error);
            }
        });
    }

    connected() {
        return new Promise((resolve, reject) => {
            if (this.socket.connected) {
                return resolve();
            }
            this.socket.once('connect', resolve);
            this.socket.once('connect_error', reject);
            this.socket.once('error', reject);
            return undefined;
        });
    }

    // Resolves [err, result] as the ack gave them; rejects after Arsenal's 30 s call timeout.
    // Like Arsenal's client, a stream marker in the result is registered inside the ack
    // callback itself, before any later packet of the same payload is processed.
    rawCall(name, args) {
        return new Promise((resolve, reject) => {
            const timer = setTimeout(() => reject(new Error(`call ${name} timed out`)), 30000);
            this.socket.emit('call', name, args, (err, result) => {
                clearTimeout(timer);
                if (!err && result && typeof result.$streamId === 'string') {
                    const proxy = new StreamProxy();
                    this.streams.set(result.$streamId, proxy);
                    this.proxies.set(result.$streamId, proxy);
                }
                resolve([err, result]);
            });
        });
    }

    async call(name, rpcArgs, subLevel, reqUids) {
        const args = { rpcArgs, subLevel: subLevel || [] };
        if (reqUids) {
            args.reqUids = reqUids;
        }
        const [err, result] = await this.rawCall(name, args);
        if (err) {
            const error = new Error(`${name} failed: ${JSON.stringify(err)}`);
            error.wire = err;
            throw error;
        }
        return result;
    }

    // The registered proxy of a stream marker, to attach a consumer to.
    stream(marker) {
        const proxy = this.proxies.get(marker && marker.$streamId);
        if (!proxy) {
            throw new Error(`not a registered stream: ${JSON.stringify(marker)}`);
        }
        return proxy;
    }

    // Every item of a listing, with acks sent (optionally late) for each stream-data.
    async list(name, options, subLevel, ackDelayMs) {
        const marker = await this.call(name, [options], subLevel);
        if (!marker || typeof marker.$streamId !== 'string' || marker.readable !== true
            || marker.writable !== false) {
            throw new Error(`${name} did not answer a stream marker: ${JSON.stringify(marker)}`);
        }
        return new Promise((resolve, reject) => {
            const items = [];
            const stats = { outstanding: 0, maxOutstanding: 0, batches: 0 };
            this.stream(marker).attach({
                onData: (data, ack) => {
                    stats.batches += 1;
                    stats.outstanding += 1;
                    stats.maxOutstanding = Math.max(stats.maxOutstanding, stats.outstanding);
                    items.push(...data);
                    const done = () => {
                        stats.outstanding -= 1;
                        ack(null);
                    };
                    if (ackDelayMs) {
                        setTimeout(done, ackDelayMs);
                    } else {
                        done();
                    }
                },
                onEnd: () => {
                    this.lastStats = stats;
                    resolve(items);
                },
                onError: error => reject(new Error(`stream error ${JSON.stringify(error)}`)),
            });
        });
    }

    close() {
        this.socket.close();
    }
}

// The consumer side of one stream: events are kept until a consumer attaches.
class StreamProxy {
    constructor() {
        this.pending = [];
        this.consumer = null;
    }

    attach(consumer) {
        this.consumer = consumer;
        for (const [kind, ...args] of this.pending.splice(0)) {
            consumer[kind](...args);
        }
    }

    dispatch(kind, ...args) {
        if (this.consumer) {
            this.consumer[kind](...args);
        } else {
            this.pending.push([kind, ...args]);
        }
    }

    onData(data, ack) { this.dispatch('onData', data, ack); }

    onEnd() { this.dispatch('onEnd'); }

    onError(error) { this.dispatch('onError', error); }
}

// The two decoders of section 3.5: Arsenal 8.1.44+ rebuilds from is_arsenal_error/type,
// older lines test the `<Type>: true` flag copied from the flattened object.
function errorIs(wire, type) {
    if (!wire || typeof wire !== 'object') {
        return false;
    }
    const newDecoder = wire.is_arsenal_error === true && wire.type === type;
    const oldDecoder = wire[type] === true && wire.message === type;
    return newDecoder && oldDecoder;
}

// `count` connected socket.io 4.x clients over WebSocket, for load drivers.
async function connectAll(port, count) {
    const clients = [];
    for (let i = 0; i < count; i += 1) {
        const client = new MetadataClient(port, '4', ['websocket']);
        await client.connected();
        clients.push(client);
    }
    return clients;
}

module.exports = { MetadataClient, connectAll, errorIs };
