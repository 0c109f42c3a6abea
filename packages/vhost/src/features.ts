/**
 * Virtio transport feature bits the control plane itself needs, re-exported
 * from `@vhost-ts/virtio` (the one place feature bits are defined).
 */
export {
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_VERSION_1,
  VIRTIO_F_ACCESS_PLATFORM,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_IN_ORDER,
} from '@vhost-ts/virtio';
