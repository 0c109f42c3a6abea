/**
 * A small, self-contained echo check over our front-end's device (its control
 * plane and rings, not its traffic scheduler): per queue pair, post RX
 * buffers, send a batch of numbered frames, wait until each comes back intact,
 * repeat. Used against `vhost-ts net --module=echo`.
 */
import { native } from '@vhost-ts/native';
import { createUsedBuffer } from '@vhost-ts/virtio';
import type { FrontendDevice } from '@vhost-ts/frontend';

export interface EchoCheckResult {
  /** Frames sent and received back intact, per queue pair. */
  sent: number[];
  received: number[];
  /** Frames that came back with other bytes than were sent. */
  bad: number;
}

/**
 * Sends `rounds` batches of `batch` frames of `size` bytes on every pair of
 * `dev` and waits (up to `timeoutMs` per batch) for all of them to come back.
 * Rejects on a timeout with the counts so far.
 */
export async function echoCheck(dev: FrontendDevice, o: { rounds: number; batch: number; size: number; timeoutMs?: number }): Promise<EchoCheckResult> {
  const pairs = dev.vrings.length / 2;
  const hdr = 12;
  const stride = 4096;
  const res: EchoCheckResult = { sent: new Array(pairs).fill(0), received: new Array(pairs).fill(0), bad: 0 };
  const used = createUsedBuffer<number>();
  const addr = [0];
  const len = [0];
  const qs = [];
  for (let q = 0; q < pairs; q++) {
    const rx = dev.vrings[2 * q]!;
    const tx = dev.vrings[2 * q + 1]!;
    const rxA = dev.memory.allocator.alloc(o.batch * stride, 4096);
    const txA = dev.memory.allocator.alloc(o.batch * stride, 4096);
    qs.push({ q, rx, tx, rxGpa: rxA.gpa, txGpa: txA.gpa, rxMem: dev.memory.locate(rxA.gpa, rxA.size), txMem: dev.memory.locate(txA.gpa, txA.size) });
  }
  const frame = (q: number, seq: number, i: number): number => (q * 31 + seq * 7 + i) & 0xff;
  for (let round = 0; round < o.rounds; round++) {
    for (const s of qs) {
      const rxU8 = s.rxMem.region.u8;
      const txU8 = s.txMem.region.u8;
      for (let k = 0; k < o.batch; k++) {
        addr[0] = s.rxGpa + k * stride;
        len[0] = stride;
        if (s.rx.ring.add(addr, len, 0, 1, k) < 0) throw new Error('RX ring full');
        rxU8.fill(0, s.rxMem.offset + k * stride, s.rxMem.offset + (k + 1) * stride);
      }
      if (s.rx.ring.needsKick()) native.eventfdWrite(s.rx.kickFd, 1);
      for (let k = 0; k < o.batch; k++) {
        const off = s.txMem.offset + k * stride;
        txU8.fill(0, off, off + hdr);
        const seq = round * o.batch + k;
        for (let i = 0; i < o.size; i++) txU8[off + hdr + i] = frame(s.q, seq, i);
        addr[0] = s.txGpa + k * stride;
        len[0] = hdr + o.size;
        if (s.tx.ring.add(addr, len, 1, 0, k) < 0) throw new Error('TX ring full');
      }
      if (s.tx.ring.needsKick()) native.eventfdWrite(s.tx.kickFd, 1);
      res.sent[s.q]! += o.batch;
    }
    const end = Date.now() + (o.timeoutMs ?? 30_000);
    const got = new Array(pairs).fill(0);
    const txDone = new Array(pairs).fill(0);
    for (;;) {
      for (const s of qs) {
        while (s.tx.ring.getUsed(used)) txDone[s.q]++;
        while (s.rx.ring.getUsed(used)) {
          const k = used.token!;
          const off = s.rxMem.offset + k * stride + hdr;
          const u8 = s.rxMem.region.u8;
          // Frames come back in order: the k-th RX buffer holds the k-th frame of the batch.
          const seq = round * o.batch + got[s.q];
          let ok = used.len === hdr + o.size;
          for (let i = 0; ok && i < o.size; i++) if (u8[off + i] !== frame(s.q, seq, i)) ok = false;
          if (ok) res.received[s.q]!++;
          else res.bad++;
          got[s.q]++;
        }
      }
      if (qs.every((s) => got[s.q] === o.batch && txDone[s.q] === o.batch)) break;
      if (Date.now() > end) throw new Error(`echo check: round ${round}: got ${JSON.stringify(got)} of ${o.batch} per pair, TX completed ${JSON.stringify(txDone)}`);
      await new Promise((r) => setImmediate(r));
    }
  }
  return res;
}
