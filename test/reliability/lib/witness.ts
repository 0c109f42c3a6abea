/**
 * A well-behaved front-end running alongside an attack: our front-end
 * (@vhost-ts/frontend) as a virtio-net device doing loop traffic (TX frames
 * come back on RX) through the back-end's loopback module. Tests check that
 * its traffic keeps flowing while other connections misbehave.
 */
import { FrontendDevice, NetTraffic, openNetDevice, type TrafficResult } from '@vhost-ts/frontend';

export interface Witness {
  device: FrontendDevice;
  traffic: NetTraffic;
  /** Frames received so far (all queue pairs). */
  received(): number;
  /**
   * Waits until at least `frames` more frames came back within `timeoutMs`;
   * returns false when traffic stalled.
   */
  flows(frames?: number, timeoutMs?: number): Promise<boolean>;
  /** Stops traffic and closes the device; returns the traffic summary. */
  close(): Promise<TrafficResult>;
}

/** Opens a net device on `socketPath` and starts loop traffic (64-byte frames, 2000 frames/s by default). */
export async function startWitness(socketPath: string, options: { frameSize?: number; queueSize?: number; rate?: number } = {}): Promise<Witness> {
  const device = await openNetDevice({ socketPath, queuePairs: 1, queueSize: options.queueSize ?? 128, memory: 8 << 20, mrgRxbuf: false, timeoutMs: 10_000 });
  // Rate-limited (default 2000 frames/s): a witness, not a load generator.
  const traffic = new NetTraffic(device, { mode: 'loop', frameSize: options.frameSize ?? 64, spinUs: 0, rate: options.rate ?? 2000 });
  const run = traffic.run(3600, 300);
  let result: TrafficResult | null = null;
  const done = run.then((r) => {
    result = r;
    return r;
  });
  const received = (): number => traffic.progress().queues.reduce((a, q) => a + q.received, 0);
  return {
    device,
    traffic,
    received,
    async flows(frames = 50, timeoutMs = 5000) {
      const start = received();
      const end = Date.now() + timeoutMs;
      while (Date.now() < end) {
        if (received() >= start + frames) return true;
        if (result !== null) return false;
        await new Promise((r) => setTimeout(r, 10));
      }
      return false;
    },
    async close() {
      traffic.stop();
      const r = await done;
      await device.close();
      return r;
    },
  };
}
