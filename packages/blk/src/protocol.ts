/**
 * virtio-blk names the driver adds to `@vhost-ts/virtio`'s blk helpers
 * (request types, status values, header and config offsets live there).
 */
import { VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP } from '@vhost-ts/virtio';

/**
 * Bytes of the config space the device describes: through
 * write_zeroes_may_unmap and its padding (secure erase is not offered).
 * QEMU 7.2 reads 57 of them.
 */
export const BLK_CONFIG_BYTES = 60;

/** A status name for logs and stats. */
export function blkStatusName(status: number): string {
  switch (status) {
    case VIRTIO_BLK_S_OK:
      return 'OK';
    case VIRTIO_BLK_S_IOERR:
      return 'IOERR';
    case VIRTIO_BLK_S_UNSUPP:
      return 'UNSUPP';
    default:
      return `status ${status}`;
  }
}
