#!/usr/bin/env node
// Checks a broker with amqplib: each check asserts what RabbitMQ answers and prints
// "ok <name>". Exits non-zero at the first failure.
// Usage: node check_amqplib.js amqp://guest:guest@127.0.0.1:5672/%2f
'use strict';

const amqp = require('amqplib');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');

const url = process.argv[2];
if (!url) {
  console.error('usage: check_amqplib.js AMQP_URL');
  process.exit(2);
}

const unique = (prefix) => `${prefix}-${process.pid}-${crypto.randomBytes(4).toString('hex')}`;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitCount(ch, queue, expected) {
  const deadline = Date.now() + 5000;
  for (;;) {
    const { messageCount } = await ch.checkQueue(queue);
    if (messageCount === expected || Date.now() > deadline) {
      assert.equal(messageCount, expected, `message count of ${queue}`);
      return;
    }
    await sleep(10);
  }
}

// Resolves with the error a channel is closed with.
function closedWith(ch) {
  return new Promise((resolve) => ch.once('error', resolve));
}

const checks = {
  async publishGetProperties(conn) {
    const ch = await conn.createChannel();
    const { queue } = await ch.assertQueue('', { exclusive: true });
    assert.match(queue, /^amq\.gen-/);
    const headers = { int: 1, str: 'x', nested: { k: true } };
    ch.sendToQueue(queue, Buffer.from('hello'), {
      contentType: 'text/plain', persistent: true, priority: 3, correlationId: 'c',
      replyTo: 'r', messageId: 'm', timestamp: 1700000000, type: 't', appId: 'a', headers,
    });
    let msg = false;
    for (let i = 0; i < 50 && !msg; i++) {
      msg = await ch.get(queue, { noAck: true });
      if (!msg) await sleep(10);
    }
    assert.ok(msg, 'basic.get returned a message');
    assert.equal(msg.content.toString(), 'hello');
    const p = msg.properties;
    assert.equal(p.contentType, 'text/plain');
    assert.equal(p.deliveryMode, 2);
    assert.equal(p.priority, 3);
    assert.equal(p.correlationId, 'c');
    assert.equal(p.replyTo, 'r');
    assert.equal(p.messageId, 'm');
    assert.equal(p.timestamp, 1700000000);
    assert.equal(p.type, 't');
    assert.equal(p.appId, 'a');
    assert.deepEqual(p.headers, headers);
    assert.equal(await ch.get(queue), false, 'get-empty');
    await ch.close();
  },

  async consumeAckNackReject(conn) {
    const ch = await conn.createChannel();
    const { queue } = await ch.assertQueue('', { exclusive: true });
    await ch.prefetch(1);
    for (const body of ['0', '1', '2']) ch.sendToQueue(queue, Buffer.from(body));
    const seen = [];
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out, saw ${JSON.stringify(seen)}`)), 5000);
      ch.consume(queue, (m) => {
        const body = m.content.toString();
        seen.push([body, m.fields.redelivered]);
        if (body === '0' && !m.fields.redelivered) ch.nack(m, false, true);
        else if (body === '1') ch.reject(m, false);
        else ch.ack(m);
        if (seen.length === 4) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    assert.deepEqual(seen, [['0', false], ['0', true], ['1', false], ['2', false]]);
    await ch.close();
  },

  async prefetchLimitsInFlight(conn) {
    const ch = await conn.createChannel();
    const { queue } = await ch.assertQueue('', { exclusive: true });
    for (let i = 0; i < 10; i++) ch.sendToQueue(queue, Buffer.from(String(i)));
    await ch.prefetch(3);
    const held = [];
    await ch.consume(queue, (m) => held.push(m));
    await sleep(300);
    assert.equal(held.length, 3, 'unacked deliveries with prefetch 3');
    ch.ack(held[0]);
    await sleep(300);
    assert.equal(held.length, 4, 'one more after one ack');
    await ch.close();
  },

  async confirmsAndMandatory(conn) {
    const ch = await conn.createConfirmChannel();
    const { queue } = await ch.assertQueue('', { exclusive: true });
    for (let i = 0; i < 20; i++) ch.sendToQueue(queue, Buffer.from(String(i)));
    await ch.waitForConfirms();
    await waitCount(ch, queue, 20);
    const returned = new Promise((resolve) => ch.once('return', resolve));
    ch.publish('amq.direct', unique('nowhere'), Buffer.from('x'), { mandatory: true });
    const msg = await returned;
    assert.equal(msg.fields.replyCode, 312);
    assert.equal(msg.fields.replyText, 'NO_ROUTE');
    await ch.waitForConfirms();
    await ch.close();
  },

  async topicRouting(conn) {
    const ch = await conn.createChannel();
    const ex = unique('topic');
    await ch.assertExchange(ex, 'topic', { durable: false });
    const star = (await ch.assertQueue('', { exclusive: true })).queue;
    const hash = (await ch.assertQueue('', { exclusive: true })).queue;
    await ch.bindQueue(star, ex, 'a.*.c');
    await ch.bindQueue(hash, ex, 'a.#');
    for (const key of ['a.b.c', 'a', 'a.b.b.c', 'b.a']) ch.publish(ex, key, Buffer.from(key));
    await waitCount(ch, star, 1);
    await waitCount(ch, hash, 3);
    await ch.deleteExchange(ex);
    await ch.close();
  },

  async headersRouting(conn) {
    const ch = await conn.createChannel();
    const ex = unique('headers');
    await ch.assertExchange(ex, 'headers', { durable: false });
    const all = (await ch.assertQueue('', { exclusive: true })).queue;
    const any = (await ch.assertQueue('', { exclusive: true })).queue;
    await ch.bindQueue(all, ex, '', { 'x-match': 'all', a: '1', b: '2' });
    await ch.bindQueue(any, ex, '', { 'x-match': 'any', a: '1', b: '2' });
    for (const headers of [{ a: '1', b: '2' }, { a: '1' }, { c: '3' }]) {
      ch.publish(ex, '', Buffer.from('m'), { headers });
    }
    await waitCount(ch, all, 1);
    await waitCount(ch, any, 2);
    await ch.deleteExchange(ex);
    await ch.close();
  },

  async errorsCloseTheChannel(conn) {
    let ch = await conn.createChannel();
    const missing = unique('missing');
    let closed = closedWith(ch);
    await assert.rejects(ch.checkQueue(missing));
    let err = await closed;
    assert.equal(err.code, 404);
    assert.match(err.message, new RegExp(`NOT_FOUND - no queue '${missing}' in vhost '/'`));

    ch = await conn.createChannel();
    const ex = unique('ex');
    await ch.assertExchange(ex, 'direct', { durable: false });
    closed = closedWith(ch);
    await assert.rejects(ch.assertExchange(ex, 'fanout', { durable: false }));
    err = await closed;
    assert.equal(err.code, 406);
    assert.match(err.message, /PRECONDITION_FAILED - inequivalent arg 'type' for exchange/);
    ch = await conn.createChannel();
    await ch.deleteExchange(ex);
    await ch.close();
  },

  async wrongPasswordIsRefused() {
    const bad = new URL(url);
    bad.password = 'not-the-password';
    await assert.rejects(amqp.connect(bad.toString()), /ACCESS_REFUSED/);
  },

  async purgeAndDeleteCounts(conn) {
    const ch = await conn.createChannel();
    const q = unique('q');
    await ch.assertQueue(q, { durable: false });
    for (let i = 0; i < 4; i++) ch.sendToQueue(q, Buffer.from('x'));
    await waitCount(ch, q, 4);
    assert.equal((await ch.purgeQueue(q)).messageCount, 4);
    ch.sendToQueue(q, Buffer.from('y'));
    await waitCount(ch, q, 1);
    assert.equal((await ch.deleteQueue(q)).messageCount, 1);
    await ch.close();
  },
};

async function main() {
  const conn = await amqp.connect(url);
  conn.on('error', () => {}); // connection errors surface through the checks
  for (const [name, fn] of Object.entries(checks)) {
    try {
      await fn(conn);
    } catch (e) {
      console.error(`FAIL ${name}: ${e.stack || e}`);
      process.exit(1);
    }
    console.log(`ok ${name}`);
  }
  await conn.close();
}

main().catch((e) => {
  console.error(`FAIL: ${e.stack || e}`);
  process.exit(1);
});
