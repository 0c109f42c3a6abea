/** piscina task of the async-pool test module: waits `delayMs`, returns it. */
export default async function task({ delayMs }: { delayMs: number }): Promise<number> {
  await new Promise((r) => setTimeout(r, delayMs));
  return delayMs;
}
