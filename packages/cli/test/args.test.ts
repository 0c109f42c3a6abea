import { describe, expect, it } from 'vitest';
import { parseCpuList, parseKeyValues, parseOptions, UsageError } from '@vhost-ts/cli/args';

const specs = {
  'socket-path': { kind: 'string', help: '' },
  queues: { kind: 'int', help: '', min: 1, max: 128 },
  client: { kind: 'flag', help: '' },
  'module-opt': { kind: 'list', help: '' },
} as const;

describe('parseOptions', () => {
  it('reads =value, separate value, flags and repeated lists', () => {
    const o = parseOptions(
      ['--socket-path=/tmp/a.sock', '--queues', '2', '--client', '--module-opt', 'ip=10.0.0.1', '--module-opt=x=y'],
      specs,
    );
    expect(o).toEqual({ 'socket-path': '/tmp/a.sock', queues: 2, client: true, 'module-opt': ['ip=10.0.0.1', 'x=y'] });
  });
  it.each([
    [['--nope'], /unknown option '--nope'/],
    [['--queues'], /needs a value/],
    [['--queues=abc'], /whole number/],
    [['--queues=0'], /at least 1/],
    [['--queues=1000'], /at most 128/],
    [['--client=yes'], /takes no value/],
    [['stray'], /unexpected argument/],
    [['--socket-path='], /non-empty/],
  ])('rejects %j', (argv, msg) => {
    expect(() => parseOptions(argv, specs)).toThrow(UsageError);
    expect(() => parseOptions(argv, specs)).toThrow(msg);
  });
});

describe('parseCpuList / parseKeyValues', () => {
  it('expands ranges', () => expect(parseCpuList('0,2-4')).toEqual([0, 2, 3, 4]));
  it('rejects bad lists', () => {
    expect(() => parseCpuList('3-1')).toThrow(UsageError);
    expect(() => parseCpuList('a')).toThrow(UsageError);
  });
  it('splits k=v at the first =', () => expect(parseKeyValues(['a=b=c', 'ip=1.2.3.4'])).toEqual({ a: 'b=c', ip: '1.2.3.4' }));
  it('rejects items without a key', () => expect(() => parseKeyValues(['=x'])).toThrow(/key=value/));
});
