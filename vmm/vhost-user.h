/* vhost-user.h: the message layer of the vhost-user-blk back end
 * (vhost-user.c), without the socket.
 *
 * vu_serve() (vmm.h) reads messages and their descriptors from the front
 * end's socket, hands each to vu_dispatch() and writes back what it
 * answers. The unit tests and the fuzz target call vu_dispatch() directly,
 * so every message the front end could send, well-formed or not, can be
 * applied to the back end's state and its outcome checked, with no socket
 * and no front end.
 *
 * Outcomes (the contract the tests check):
 *   - a malformed message (header shorter than 12 bytes, wrong version,
 *     payload longer than VU_MAX_PAYLOAD or not the length the header
 *     says, a payload too short for its request, the wrong number of
 *     descriptors) ends the connection: vu_dispatch returns -EPROTO;
 *   - a well-formed request that fails (an unknown request, a ring index
 *     we do not have, a ring size out of range, ring addresses outside the
 *     memory table, memory we cannot map) is answered with a nonzero
 *     REPLY_ACK when the front end asked for one (NEED_REPLY with
 *     VHOST_USER_PROTOCOL_F_REPLY_ACK negotiated); without an
 *     acknowledgement the front end could not learn of the failure, so the
 *     connection ends and vu_dispatch returns the request's -errno;
 *   - GET requests always reply, and an acknowledgement is never sent on
 *     top of a reply (vhost-user.rst, "REPLY_ACK").
 * Whatever the outcome, every descriptor passed in is either kept by the
 * back end or closed before vu_dispatch returns.
 */
#ifndef IMGFS_VMM_VHOST_USER_H
#define IMGFS_VMM_VHOST_USER_H

#include "vmm.h"

#include <stddef.h>
#include <stdint.h>

/* Request codes (vhost-user.rst, "Front-end message types"). */
enum {
	VU_GET_FEATURES = 1,
	VU_SET_FEATURES = 2,
	VU_SET_OWNER = 3,
	VU_RESET_OWNER = 4,
	VU_SET_MEM_TABLE = 5,
	VU_SET_LOG_BASE = 6,
	VU_SET_LOG_FD = 7,
	VU_SET_VRING_NUM = 8,
	VU_SET_VRING_ADDR = 9,
	VU_SET_VRING_BASE = 10,
	VU_GET_VRING_BASE = 11,
	VU_SET_VRING_KICK = 12,
	VU_SET_VRING_CALL = 13,
	VU_SET_VRING_ERR = 14,
	VU_GET_PROTOCOL_FEATURES = 15,
	VU_SET_PROTOCOL_FEATURES = 16,
	VU_GET_QUEUE_NUM = 17,
	VU_SET_VRING_ENABLE = 18,
	VU_GET_CONFIG = 24,
	VU_SET_CONFIG = 25,
};

#define VU_F_PROTOCOL_FEATURES 30
#define VU_PROTOCOL_F_MQ 0
#define VU_PROTOCOL_F_REPLY_ACK 3
#define VU_PROTOCOL_F_CONFIG 9

/* Header: request, flags, payload size (u32 each, host byte order). */
#define VU_VERSION 1
#define VU_FLAG_VERSION_MASK 3
#define VU_FLAG_REPLY (1u << 2)
#define VU_FLAG_NEED_REPLY (1u << 3)
#define VU_HDR_BYTES 12
#define VU_MAX_PAYLOAD 4096
#define VU_MAX_FDS 8
/* SET_VRING_KICK/CALL/ERR payload: ring index, and "no descriptor". */
#define VU_VRING_IDX_MASK 0xffull
#define VU_VRING_NOFD (1ull << 8)
#define VU_MAX_QUEUES 64

struct vu_server;

/* What the back end sends back for one message, as on the wire (header,
 * then payload); len_bytes is 0 when nothing is due. */
struct vu_reply {
	size_t len_bytes;
	uint8_t bytes[VU_HDR_BYTES + VU_MAX_PAYLOAD];
};

/* A back end for vblk (not owned) with no front end yet. -ENOMEM. */
int vu_server_new(struct vblk *vblk, struct vu_server **s_r);
/* Forgets the front end, as when its connection ends: stops every ring
 * (joining its thread), unmaps guest memory, closes every descriptor it
 * gave, and clears the negotiated features. */
void vu_server_reset(struct vu_server *s);
/* vu_server_reset, then frees s. NULL is fine. */
void vu_server_free(struct vu_server *s);

/* Applies one message: msg_len bytes of header and payload as they came
 * on the wire, and the nb_fds descriptors that came with them, all of
 * which the call takes over (kept or closed, whatever happens). Fills
 * *reply. Returns 0 to go on reading messages, or -errno when the
 * connection must end (see the top of this file: -EPROTO for a malformed
 * message, the request's error for an unacknowledged failure). */
int vu_dispatch(struct vu_server *s, const void *msg, size_t msg_len,
		const int *fds, unsigned nb_fds, struct vu_reply *reply);

#endif
