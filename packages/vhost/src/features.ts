/**
 * Virtio transport feature bits the control plane itself needs (the full set
 * lives in `@vhost-ts/virtio`; these are fixed by the virtio spec).
 */

/** VIRTIO_F_INDIRECT_DESC. */
export const VIRTIO_F_INDIRECT_DESC = 28;
/** VIRTIO_F_EVENT_IDX (VIRTIO_RING_F_EVENT_IDX): avail/used rings carry used_event/avail_event. */
export const VIRTIO_F_EVENT_IDX = 29;
/** VIRTIO_F_VERSION_1. */
export const VIRTIO_F_VERSION_1 = 32;
/** VIRTIO_F_ACCESS_PLATFORM (IOMMU_PLATFORM): ring and descriptor addresses are IOVAs. */
export const VIRTIO_F_ACCESS_PLATFORM = 33;
/** VIRTIO_F_RING_PACKED. */
export const VIRTIO_F_RING_PACKED = 34;
/** VIRTIO_F_IN_ORDER. */
export const VIRTIO_F_IN_ORDER = 35;
