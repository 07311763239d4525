/* vmm.h: the public interface of the vmm layer: guest memory, split
 * virtqueues and a virtio-blk device model over an imgfmt image.
 *
 * The layer is a device, not a machine: whoever owns guest memory (the
 * test VMM in imgvmm.c, or a vhost-user front end such as QEMU) describes
 * it with struct vmm_mem, places the rings, and calls vblk_process() when
 * the driver kicks. Everything the guest wrote is distrusted: descriptor
 * indices, addresses, lengths, flags and request headers are checked
 * against guest memory, the queue size and the disk size. A request that
 * names a place to write its status gets exactly one answer (OK, IOERR or
 * UNSUPP); a chain so malformed that no status byte can be found (a loop,
 * an index out of range, a status byte that is not device-writable) marks
 * the queue broken, as virtio 1.x 2.1.2 (DEVICE_NEEDS_RESET) allows, and
 * nothing more is read from or written to that queue until it is set up
 * again.
 *
 * Threading: one thread at a time per struct vq; any number of queues of
 * one device may run in parallel (they share only the image, which is
 * thread-safe, and read-only device state).
 *
 * References: virtio 1.x (OASIS virtio-v1.1), 2.7 "Split Virtqueues" and
 * 5.2 "Block Device"; docs/interop/vhost-user.rst in QEMU for vhost-user.c.
 */
#ifndef IMGFS_VMM_H
#define IMGFS_VMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct img;

/* ------------------------------------------------------------------------
 * Guest memory: a few regions of guest-physical address space, each
 * mapped somewhere in this process. uva is the front end's own address of
 * the region (vhost-user rings are given in those), 0 when unused.
 */
#define VMM_MEM_MAX_REGIONS 8

struct vmm_mem_region {
	uint64_t gpa;
	uint64_t size_bytes;
	uint64_t uva;
	uint8_t *host;
};

struct vmm_mem {
	unsigned nb_regions;
	struct vmm_mem_region regions[VMM_MEM_MAX_REGIONS];
};

/* Adds a region. -EINVAL for an empty or wrapping region or one that
 * overlaps another in guest-physical space, -ENOSPC when full. */
int vmm_mem_add(struct vmm_mem *mem, uint64_t gpa, uint64_t size_bytes,
		void *host, uint64_t uva);
/* The host address of [gpa, gpa + len) when the whole range lies in one
 * region, else NULL. len 0 still needs gpa inside a region. */
void *vmm_mem_gpa(const struct vmm_mem *mem, uint64_t gpa, uint64_t len);
/* The same for a front-end virtual address. */
void *vmm_mem_uva(const struct vmm_mem *mem, uint64_t uva, uint64_t len);
/* The longest prefix of [gpa, gpa + len) that lies in one region: host
 * address and length (> 0) of it, or NULL when gpa is in no region. */
void *vmm_mem_gpa_prefix(const struct vmm_mem *mem, uint64_t gpa,
			 uint64_t len, uint64_t *prefix_len_r);

/* ------------------------------------------------------------------------
 * Split virtqueues (virtio 1.x 2.7). The layout is fixed by the spec: a
 * descriptor table of 16-byte entries, the available ring and the used
 * ring, little-endian.
 */
#define VQ_MAX_SIZE 1024
/* Descriptors one request may use, direct and indirect together. */
#define VQ_MAX_SEGS 1024

#define VRING_DESC_F_NEXT 1
#define VRING_DESC_F_WRITE 2
#define VRING_DESC_F_INDIRECT 4
#define VRING_AVAIL_F_NO_INTERRUPT 1
#define VRING_USED_F_NO_NOTIFY 1

#define VIRTIO_RING_F_INDIRECT_DESC 28
#define VIRTIO_RING_F_EVENT_IDX 29
#define VIRTIO_F_VERSION_1 32

/* Bytes of each part of a queue of size entries, and their alignment. */
static inline uint64_t vq_desc_bytes(unsigned size)
{
	return 16ull * size;
}
static inline uint64_t vq_avail_bytes(unsigned size)
{
	return 6ull + 2ull * size; /* flags, idx, ring[], used_event */
}
static inline uint64_t vq_used_bytes(unsigned size)
{
	return 6ull + 8ull * size; /* flags, idx, ring[], avail_event */
}
#define VQ_DESC_ALIGN 16
#define VQ_AVAIL_ALIGN 2
#define VQ_USED_ALIGN 4

/* One descriptor of a popped chain, as the driver gave it (not yet
 * translated: translation happens when the bytes are used). */
struct vq_seg {
	uint64_t gpa;
	uint32_t len_bytes;
	bool device_writable;
};

struct vq_chain {
	uint16_t head;
	unsigned nb_segs;
	struct vq_seg segs[VQ_MAX_SEGS];
};

struct vq_stats {
	uint64_t nb_requests;
	uint64_t nb_notifies;
};

struct vq {
	const struct vmm_mem *mem;
	unsigned size;
	uint8_t *desc;  /* host addresses of the three parts */
	uint8_t *avail;
	uint8_t *used;
	uint16_t last_avail_idx; /* next available entry to pop */
	uint16_t shadow_avail_idx; /* avail->idx when we last read it */
	uint16_t used_idx;       /* used entries filled so far */
	uint16_t published_used; /* what we last stored in used->idx */
	uint16_t signalled_used; /* used_idx at the last notification */
	bool signalled_used_valid;
	bool event_idx;
	bool indirect;
	bool broken;
	char broken_why[96];
	struct vq_stats stats;
	struct vq_chain chain; /* scratch for one request */
};

/* Sets up vq over rings already translated to host addresses, each of
 * which must lie inside guest memory (the caller checks that with
 * vmm_mem_gpa/vmm_mem_uva and the vq_*_bytes sizes). size is 1 to
 * VQ_MAX_SIZE; -EINVAL otherwise or when an address is misaligned.
 * last_avail_idx is where to resume (0 for a fresh queue); the used index
 * is read back from the used ring. features are the negotiated ones. */
int vq_init(struct vq *vq, const struct vmm_mem *mem, unsigned size,
	    void *desc, void *avail, void *used, uint16_t last_avail_idx,
	    uint64_t features);

/* Takes the next available chain into vq->chain: 1 when there is one, 0
 * when the ring is empty, -EIO when the queue is (now) broken. The chain
 * structure is checked here: indices, loops, length, indirect tables (and
 * their placement in guest memory); buffer addresses are checked later,
 * by whoever uses them. */
int vq_pop(struct vq *vq);
/* Puts head on the used ring with len_bytes written, and publishes it. */
void vq_push(struct vq *vq, uint16_t head, uint32_t len_bytes);
/* The same without publishing: the driver sees the entry at the next
 * vq_flush, vq_push, vq_need_notify, or vq_pop that finds the available
 * entries it knew of used up, so a batch costs one store of the used
 * index. */
void vq_fill(struct vq *vq, uint16_t head, uint32_t len_bytes);
/* Publishes the entries filled since the last flush. */
void vq_flush(struct vq *vq);
/* After a batch of vq_push/vq_fill (flushes first): true when the driver
 * wants an interrupt. */
bool vq_need_notify(struct vq *vq);
/* Before sleeping: tells the driver to kick for anything after what we
 * popped (event idx), and returns true when more arrived meanwhile. */
bool vq_enable_notify(struct vq *vq);
/* Marks the queue broken with a reason; pops return -EIO from now on. */
void vq_set_broken(struct vq *vq, const char *why);

/* ------------------------------------------------------------------------
 * virtio-blk (virtio 1.x 5.2)
 */
#define VIRTIO_BLK_F_SIZE_MAX 1
#define VIRTIO_BLK_F_SEG_MAX 2
#define VIRTIO_BLK_F_GEOMETRY 4
#define VIRTIO_BLK_F_RO 5
#define VIRTIO_BLK_F_BLK_SIZE 6
#define VIRTIO_BLK_F_FLUSH 9
#define VIRTIO_BLK_F_TOPOLOGY 10
#define VIRTIO_BLK_F_CONFIG_WCE 11
#define VIRTIO_BLK_F_MQ 12
#define VIRTIO_BLK_F_DISCARD 13
#define VIRTIO_BLK_F_WRITE_ZEROES 14

#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8
#define VIRTIO_BLK_T_DISCARD 11
#define VIRTIO_BLK_T_WRITE_ZEROES 13

#define VIRTIO_BLK_S_OK 0
#define VIRTIO_BLK_S_IOERR 1
#define VIRTIO_BLK_S_UNSUPP 2

#define VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP 1
#define VIRTIO_BLK_ID_BYTES 20
#define VIRTIO_BLK_SECTOR_BYTES 512
/* struct virtio_blk_config up to write_zeroes_may_unmap and padding. */
#define VBLK_CONFIG_BYTES 60
#define VBLK_MAX_DISCARD_SEGS 32
/* Larger discard/write-zeroes requests are refused with IOERR. */
#define VBLK_MAX_DISCARD_SECTORS (1u << 22)

struct vblk;

struct vblk_opts {
	bool read_only;     /* offer VIRTIO_BLK_F_RO even if img is writable */
	const char *serial; /* GET_ID answer (at most 20 bytes), NULL: none */
	unsigned nb_queues; /* 0 means 1 */
	unsigned queue_size; /* the largest queue the driver may set up,
				for seg_max; 0 means VQ_MAX_SIZE */
};

/* A device over img (not owned). -ENOMEM, -EINVAL for bad opts. */
int vblk_new(struct img *img, const struct vblk_opts *opts,
	     struct vblk **vblk_r);
void vblk_free(struct vblk *vblk);

/* The features the device offers (VIRTIO_F_*, VIRTIO_BLK_F_*). */
uint64_t vblk_features(const struct vblk *vblk);
/* Accepts the driver's choice; -EINVAL when it asks for something not
 * offered or leaves out VERSION_1 (legacy is not supported). */
int vblk_set_features(struct vblk *vblk, uint64_t features);
uint64_t vblk_driver_features(const struct vblk *vblk);
/* The config space, little-endian, VBLK_CONFIG_BYTES long. */
void vblk_get_config(const struct vblk *vblk, uint8_t *cfg);
unsigned vblk_nb_queues(const struct vblk *vblk);

/* Serves everything available on vq: pops, executes each request on the
 * image (in ring order), pushes. Returns the number of requests answered
 * (>= 0), or -EIO when the queue is broken (requests answered before that
 * stay answered). *notify_r tells whether the driver wants an interrupt
 * now. */
int vblk_process(struct vblk *vblk, struct vq *vq, bool *notify_r);

/* ------------------------------------------------------------------------
 * vhost-user-blk back end (docs/interop/vhost-user.rst in QEMU).
 */

/* Listens on socket_path (replacing a stale socket file) and serves vblk
 * to one front end at a time, accepting the next one when it goes away;
 * each enabled queue runs in a thread of its own. ready_fd, if >= 0, gets
 * one line "ready\n" once the socket listens and is then closed. Returns
 * only on a setup error (-errno); ends with the process otherwise. */
int vu_serve(struct vblk *vblk, const char *socket_path, int ready_fd);

#endif
