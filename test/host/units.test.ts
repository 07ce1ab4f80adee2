// The CLI's parsers for rates and addresses.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseHostPort } from '../../src/host/address.js';
import { formatDuration, formatRate, parseRate } from '../../src/cli/units.js';

test('parseRate: network units are decimal bits, byte units as written, 0 = unlimited', () => {
  const cases: [string, number][] = [
    ['0', 0],
    ['1Gbit', 125_000_000],
    ['1 Gbit/s', 125_000_000],
    ['100Mbit', 12_500_000],
    ['100mbit', 12_500_000],
    ['100Mbps', 12_500_000],
    ['100Mb/s', 12_500_000],
    ['8kbit', 1000],
    ['500MB/s', 500_000_000],
    ['500MBps', 500_000_000],
    ['64MiB/s', 64 * 1024 * 1024],
    ['500M', 500 * 1024 * 1024],
    ['1.5Gbit', 187_500_000],
    ['12345', 12345],
    ['12345B/s', 12345],
  ];
  for (const [text, want] of cases) assert.equal(parseRate(text, '--max-bandwidth'), want, text);
  for (const bad of ['', 'fast', '1Gibit', '-5M', '100/s', '1 Xbit', '0.01bit']) {
    assert.throws(() => parseRate(bad, '--max-bandwidth'), (e: Error) => e.name === 'UsageError' && e.message.startsWith('--max-bandwidth:'), bad);
  }
});

test('formatRate and formatDuration speak like people', () => {
  assert.equal(formatRate(125_000_000), '1.00 Gbit/s');
  assert.equal(formatRate(12_500_000), '100 Mbit/s');
  assert.equal(formatRate(0), '0 bit/s');
  assert.equal(formatDuration(0.5), '500 us');
  assert.equal(formatDuration(42), '42 ms');
  assert.equal(formatDuration(1234), '1.23 s');
  assert.equal(formatDuration(185_000), '3 min 5 s');
});

test('parseHostPort accepts the usual forms and refuses the rest clearly', () => {
  assert.deepEqual(parseHostPort('127.0.0.1:7001', 'x'), { host: '127.0.0.1', port: 7001 });
  assert.deepEqual(parseHostPort('localhost:7001', 'x'), { host: 'localhost', port: 7001 });
  assert.deepEqual(parseHostPort('[::1]:7001', 'x'), { host: '::1', port: 7001 });
  assert.deepEqual(parseHostPort(':7001', 'x'), { host: '127.0.0.1', port: 7001 });
  assert.deepEqual(parseHostPort('7001', 'x'), { host: '127.0.0.1', port: 7001 });
  assert.deepEqual(parseHostPort('0.0.0.0:0', 'x', { allowZero: true }), { host: '0.0.0.0', port: 0 });
  for (const bad of ['host', '::1:7001', '1.2.3.4:70000', '1.2.3.4:0', 'a b:1', 'x:y']) {
    assert.throws(() => parseHostPort(bad, '--to'), (e: Error) => e.name === 'UsageError' && e.message.startsWith('--to:'), bad);
  }
});
