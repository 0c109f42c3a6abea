// Fast checks of the real-peer harness: argument vectors, output parsers, cpio writer, process
// management. No peer is started except short-lived shell processes.
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  cpioNewc,
  initScript,
  ManagedProcess,
  makeTempDir,
  OutputRing,
  parseForwardStats,
  parseMarkers,
  parsePortStats,
  pidAlive,
  qemuArgs,
  removeDir,
  Testpmd,
  socketPath,
  storageDaemonArgs,
  testpmdArgs,
  testpmdVdev,
  which,
} from '@vhost-ts/peers';
import { describe, expect, it } from 'vitest';

// Real testpmd 22.11 output (front-end in txonly, then `stop`).
const PORT_STATS = `
testpmd> show port stats all

  ######################## NIC statistics for port 0  ########################
  RX-packets: 0          RX-missed: 0          RX-bytes:  0
  RX-errors: 0
  RX-nombuf:  0         
  TX-packets: 18312928   TX-errors: 0          TX-bytes:  1172027392

  Throughput (since last show)
  Rx-pps:            0          Rx-bps:            0
  Tx-pps:      9156464          Tx-bps:   4688109568
  ############################################################################
testpmd> `;

const STOP = `Telling cores to stop...
Waiting for lcores to finish...

  ---------------------- Forward statistics for port 0  ----------------------
  RX-packets: 0              RX-dropped: 0             RX-total: 0
  TX-packets: 36126208       TX-dropped: 3419616       TX-total: 39545824
  ----------------------------------------------------------------------------

  +++++++++++++++ Accumulated forward statistics for all ports+++++++++++++++
  RX-packets: 0              RX-dropped: 0             RX-total: 0
  TX-packets: 36126208       TX-dropped: 3419616       TX-total: 39545824
  ++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++

Done.
testpmd> `;

describe('testpmd output parsers', () => {
  it('parses show port stats all', () => {
    const [p0, ...rest] = parsePortStats(PORT_STATS);
    expect(rest).toEqual([]);
    expect(p0).toMatchObject({ port: 0, rxPackets: 0, txPackets: 18312928, txBytes: 1172027392, txPps: 9156464, txBps: 4688109568 });
  });

  it('parses the forward statistics of the last report', () => {
    const fs = parseForwardStats(`${STOP}\n${STOP.replaceAll('36126208', '5').replaceAll('3419616', '1').replaceAll('39545824', '6')}`);
    expect(fs?.total).toEqual({ rxPackets: 0, rxDropped: 0, rxTotal: 0, txPackets: 5, txDropped: 1, txTotal: 6 });
    expect(fs?.ports.get(0)?.txPackets).toBe(5);
    expect(fs?.ports.size).toBe(1);
    expect(parseForwardStats('Packet forwarding not started')).toBeUndefined();
  });

  it('builds the vdev and argument vectors of both roles', () => {
    expect(
      testpmdVdev({ role: 'frontend', socketPath: '/tmp/x.sock', queues: 2, server: true, packedVq: true, mrgRxbuf: false, inOrder: true }),
    ).toBe('net_virtio_user0,path=/tmp/x.sock,queues=2,server=1,packed_vq=1,mrg_rxbuf=0,in_order=1');
    expect(testpmdVdev({ role: 'backend', socketPath: '/tmp/x.sock', client: true })).toBe('net_vhost0,iface=/tmp/x.sock,queues=1,client=1');
    expect(() => testpmdVdev({ role: 'backend', socketPath: '/s', packedVq: true })).toThrow(/front-end/);
    const args = testpmdArgs(
      { role: 'frontend', socketPath: '/tmp/x.sock', forwardMode: 'txonly', txpkts: 64, cpus: { main: 1, forward: 0 }, maxPktLen: 9018, mbufSize: 10240 },
      'pfx',
    );
    expect(args.slice(0, args.indexOf('--'))).toEqual([
      '--no-pci', '--no-huge', '-m', '512', '--file-prefix=pfx', '--lcores', '0@1,1@0', '--vdev', 'net_virtio_user0,path=/tmp/x.sock,queues=1',
    ]);
    expect(args.slice(args.indexOf('--') + 1)).toEqual([
      '-i', '--auto-start', '--forward-mode=txonly', '--total-num-mbufs=32768', '--rxq=1', '--txq=1', '--nb-cores=1',
      // sizes before --txpkts: testpmd checks txpkts against the mbuf size parsed so far
      '--max-pkt-len=9018', '--mbuf-size=10240', '--txpkts=64',
    ]);
  });
});

describe('QEMU and storage daemon argument vectors', () => {
  it('always sets vectors=0 on virtio-net-pci and mq=on with several queues', () => {
    const a = qemuArgs({
      image: { kernel: '/k', initrd: '/i' },
      net: [{ socketPath: '/tmp/n.sock', queues: 2, reconnect: true }],
      blk: [{ socketPath: '/tmp/b.sock', numQueues: 2 }],
    });
    const joined = a.join(' ');
    expect(joined).toContain('-object memory-backend-memfd,id=mem,size=256M,share=on -numa node,memdev=mem');
    expect(joined).toContain('-chardev socket,id=c0,path=/tmp/n.sock,reconnect=1');
    expect(joined).toContain('-netdev vhost-user,id=n0,chardev=c0,queues=2');
    expect(joined).toContain('-device virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56,mq=on,vectors=0');
    expect(joined).toContain('-device vhost-user-blk-pci,chardev=b0,num-queues=2');
  });

  it('exports the image with the requested queue count', () => {
    expect(storageDaemonArgs({ imagePath: '/d.img', socketPath: '/tmp/b.sock', numQueues: 2 })).toEqual([
      '--blockdev', 'driver=file,node-name=file0,filename=/d.img',
      '--export', 'type=vhost-user-blk,id=export0,node-name=file0,addr.type=unix,addr.path=/tmp/b.sock,writable=on,num-queues=2',
    ]);
  });
});

describe('guest image pieces', () => {
  it('parses marker lines from serial output', () => {
    const serial = '[    1.0] virtio_net\r\n@@boot\r\n@@ping-rc 0\r\nnoise @@sha abc -\r\n@@exit 0\r\n';
    expect(parseMarkers(serial)).toEqual([
      { name: 'boot', value: '' },
      { name: 'ping-rc', value: '0' },
      { name: 'sha', value: 'abc -' },
      { name: 'exit', value: '0' },
    ]);
  });

  it('writes a cpio newc archive that cpio can list', () => {
    const archive = cpioNewc([
      { name: 'bin', mode: 0o040755 },
      { name: 'dev/console', mode: 0o020600, rdevMajor: 5, rdevMinor: 1 },
      { name: 'init', mode: 0o100755, data: Buffer.from(initScript(['virtio'])) },
      { name: 'odd', mode: 0o100644, data: Buffer.from('abc') },
    ]);
    expect(archive.length % 512).toBe(0);
    expect(archive.subarray(0, 6).toString()).toBe('070701');
    const busybox = which('busybox');
    if (busybox !== undefined) {
      const list = execFileSync(busybox, ['cpio', '-t'], { input: archive }).toString().trim().split('\n');
      expect(list).toEqual(['bin', 'dev/console', 'init', 'odd']);
    }
  });
});

describe('process management', () => {
  it('keeps the tail of the output in a ring buffer and tracks positions', () => {
    const r = new OutputRing(10);
    r.push('hello ');
    const pos = r.position;
    r.push('world, long line');
    expect(r.text()).toBe(' long line');
    expect(r.position).toBe(22);
    expect(r.start).toBe(12);
    // Position 6 is no longer retained: everything retained is returned.
    expect(r.since(pos)).toBe(' long line');
    expect(r.since(20)).toBe('ne');
  });

  it('kills the whole process group and removes the temp dir on close', async () => {
    const dir = await makeTempDir('pm');
    // A shell with a child that ignores SIGTERM: only SIGKILL to the group ends both.
    const p = new ManagedProcess('sh', ['-c', `trap '' TERM; sleep 30 & echo child $!; wait`], { name: 'sh', cleanupDirs: [dir] });
    const m = await p.waitForOutput(/child (\d+)/, { timeoutMs: 5000 });
    const childPid = Number(m[1]);
    expect(pidAlive(childPid)).toBe(true);
    const t0 = Date.now();
    await p.close({ termMs: 300 });
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(p.running).toBe(false);
    // The orphan is reaped by init (or our subreaper) asynchronously.
    for (let i = 0; i < 50 && pidAlive(childPid) && !isZombie(childPid); i++) await new Promise((r) => setTimeout(r, 20));
    expect(!pidAlive(childPid) || isZombie(childPid)).toBe(true);
    expect(existsSync(dir)).toBe(false);
  });

  it('fails a wait with the output when the process exits first, and on timeout', async () => {
    const p = new ManagedProcess('sh', ['-c', 'echo some context; exit 3'], { name: 'sh' });
    await expect(p.waitForOutput('never printed', { timeoutMs: 5000 })).rejects.toThrow(/exited before[\s\S]*some context/);
    expect((await p.exited).code).toBe(3);
    const q = new ManagedProcess('sleep', ['10'], { name: 'sleep' });
    await expect(q.waitForOutput('x', { timeoutMs: 100 })).rejects.toThrow(/no \/x\/ within 100 ms/);
    await q.close();
  });

  it('supports await using (Symbol.asyncDispose) for scope-bound clean-up', async () => {
    let pid = 0;
    {
      await using p = new ManagedProcess('sleep', ['30'], { name: 'sleep' });
      pid = p.pid;
      expect(pidAlive(pid)).toBe(true);
    }
    expect(pidAlive(pid)).toBe(false);
  });

  it('keeps stdout apart from stderr so a prompt written byte by byte is found whatever stderr does', async () => {
    // What DPDK's cmdline does: the prompt a byte at a time, and testpmd's main thread writing an
    // error line to stderr meanwhile ("testp" + error + "md> " in the merged capture).
    const p = new ManagedProcess('sh', ['-c', `printf 'testp'; sleep 0.2; echo 'Error during enabling promiscuous mode - ignore' >&2; sleep 0.2; printf 'md> '; sleep 5`], { name: 'sh' });
    try {
      await p.waitForOutput('testpmd> ', { timeoutMs: 5000, stream: 'stdout' });
      expect(p.output.text()).toContain('Error during enabling');
      expect(p.output.text()).not.toContain('testpmd> ');
      expect(p.stdout.text()).toBe('testpmd> ');
      await expect(p.waitForOutput('testpmd> ', { timeoutMs: 100 })).rejects.toThrow(/within 100 ms/);
    } finally {
      await p.close();
    }
  });

  it('talks to a testpmd whose prompt is split by stderr lines (start-up and commands)', async () => {
    const dir = await makeTempDir('fake-testpmd');
    const script = join(dir, 'testpmd');
    // A stand-in for dpdk-testpmd: every prompt is split by a stderr line, like the real one's
    // "Error during enabling promiscuous mode" at start-up; `stop` answers on stderr only.
    const stats = PORT_STATS.replace(/^\ntestpmd> show port stats all\n/, '').replace(/testpmd> $/, '');
    writeFileSync(
      script,
      `#!/bin/sh
prompt() { printf 'testp'; sleep 0.05; echo "a stderr line inside the prompt" >&2; sleep 0.05; printf 'md> '; }
echo "Port 0: 56:48:4F:53:54:00"
echo "Error during enabling promiscuous mode for port 0: Operation not supported - ignore" >&2
printf 'testpmd> '
while read -r line; do
  case "$line" in
    "show port stats all") cat <<'STATS'
${stats}
STATS
      ;;
    stop) echo "Packet forwarding not started" >&2 ;;
    quit) exit 0 ;;
  esac
  prompt
done
`,
    );
    chmodSync(script, 0o755);
    const tp = await Testpmd.start({ role: 'frontend', binary: script, waitForSocket: false, readyTimeoutMs: 5000 });
    try {
      // What testpmd wrote to stderr before its first prompt belongs to start-up, not to the
      // answer of the first command.
      expect(await tp.command('set txpkts 64', { timeoutMs: 5000 })).not.toMatch(/promiscuous/);
      const stats = await tp.portStat(0, 5000);
      expect(stats.txPackets).toBe(18312928);
      expect(stats.txPps).toBe(9156464);
      await expect(tp.stop(5000)).rejects.toThrow(/forwarding was not started/);
      // Still in step: the next command gets its own answer.
      expect((await tp.portStat(0, 5000)).txBytes).toBe(1172027392);
      expect(tp.macAddress()).toBe('56:48:4f:53:54:00');
    } finally {
      expect((await tp.close()).code).toBe(0);
      await removeDir(dir);
    }
  });

  it('refuses socket paths the kernel cannot bind', () => {
    expect(() => socketPath('/tmp', 'x'.repeat(120))).toThrow(/too long/);
    expect(socketPath('/tmp/d', 'a.sock')).toBe('/tmp/d/a.sock');
  });
});

function isZombie(pid: number): boolean {
  try {
    return /\) Z /.test(execFileSync('cat', [`/proc/${pid}/stat`]).toString());
  } catch {
    return false;
  }
}
