import { describe, expect, it } from 'vitest';
import { parseBytes, parseFrontendArgs, UsageError } from '@vhost-ts/frontend/cli/args';

describe('frontend CLI arguments', () => {
  it('parses the documented form with defaults', () => {
    const o = parseFrontendArgs(['--socket-path=/tmp/s.sock', '--mode=loop']);
    expect(o).toMatchObject({
      socketPath: '/tmp/s.sock', mode: 'loop', server: false, queues: 1, packed: false, size: 64, seconds: 5,
      rate: 0, queueSize: 256, memory: 64 * 1024 * 1024, layout: 'dpdk', burst: 32, mrgRxbuf: true, verify: true, output: 'auto',
    });
    expect(o.window).toBeUndefined();
  });

  it('parses every option, in both --k=v and --k v forms', () => {
    const o = parseFrontendArgs([
      '--socket-path', '/tmp/x', '--server', '--queues=2', '--packed', '--size=1500', '--seconds=0.5', '--mode=tx',
      '--rate=1000', '--queue-size=1000', '--memory=128M', '--layout=qemu', '--regions=3', '--burst=64', '--indirect',
      '--event-idx', '--no-mrg-rxbuf', '--window=0', '--poll', '--no-verify', '--timeout-ms=100', '--drain-ms=0', '--json',
      '--cpu=0,2-3', '--workers=2', '--spin-us=50', '--trace',
    ]);
    expect(o).toMatchObject({
      socketPath: '/tmp/x', server: true, queues: 2, packed: true, size: 1500, seconds: 0.5, mode: 'tx', rate: 1000,
      queueSize: 1000, memory: 128 * 1024 * 1024, layout: 'qemu', regions: 3, burst: 64, indirect: true, eventIdx: true,
      mrgRxbuf: false, window: 0, poll: true, verify: false, timeoutMs: 100, drainMs: 0, output: 'json',
      cpus: [0, 2, 3], workers: 2, spinUs: 50, trace: true,
    });
  });

  it('blk-verify defaults the size to 4096 and requires multiples of 512', () => {
    expect(parseFrontendArgs(['--socket-path=/s', '--mode=blk-verify']).size).toBe(4096);
    expect(() => parseFrontendArgs(['--socket-path=/s', '--mode=blk-verify', '--size=1000'])).toThrow(UsageError);
  });

  it.each([
    [[], /socket-path/],
    [['--socket-path=/s'], /--mode/],
    [['--socket-path=/s', '--mode=fly'], /unknown mode/],
    [['--socket-path=/s', '--mode=tx', '--size=20'], /--size/],
    [['--socket-path=/s', '--mode=tx', '--queues=0'], /--queues/],
    [['--socket-path=/s', '--mode=tx', '--queues=two'], /integer/],
    [['--socket-path=/s', '--mode=tx', '--queue-size=100'], /power of two/],
    [['--socket-path=/s', '--mode=tx', '--seconds=-1'], /--seconds/],
    [['--socket-path=/s', '--mode=tx', '--bogus'], /unknown option/],
    [['--socket-path=/s', '--mode=tx', '--packed=1'], /takes no value/],
    [['--socket-path=/s', '--mode=tx', '--mode=rx'], /twice/],
    [['--socket-path=/s', '--mode=tx', 'extra'], /unexpected argument/],
    [['--socket-path=/s', '--mode=tx', '--json', '--quiet'], /exclude/],
    [['--socket-path=/s', '--mode=tx', '--layout=weird'], /layout/],
    [['--socket-path=/s', '--mode=tx', '--memory=12345'], /--memory/],
    [['--socket-path'], /needs a value/],
    [['--socket-path=/s', '--mode=tx', '--cpu=1-a'], /--cpu/],
    [['--socket-path=/s', '--mode=tx', '--cpu=3-1'], /bad range/],
    [['--socket-path=' + 'x'.repeat(200), '--mode=tx'], /longer/],
  ])('rejects %j with a clear message and exit code 2', (argv, msg) => {
    let err: unknown;
    try {
      parseFrontendArgs(argv as string[]);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UsageError);
    expect((err as UsageError).message).toMatch(msg);
    expect((err as UsageError).exitCode).toBe(2);
  });

  it('--help yields the usage text', () => {
    expect(() => parseFrontendArgs(['--help'])).toThrow(/usage: vhost-ts frontend/);
  });

  it('parses byte counts with suffixes', () => {
    expect(parseBytes('1500', 'x')).toBe(1500);
    expect(parseBytes('4K', 'x')).toBe(4096);
    expect(parseBytes('64M', 'x')).toBe(64 * 1024 * 1024);
    expect(parseBytes('1GiB', 'x')).toBe(1024 ** 3);
    expect(() => parseBytes('1.5M', 'x')).toThrow(UsageError);
  });
});
