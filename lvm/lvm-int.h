/* lvm-int.h: what the files of lvm/ share. Only lvm/ includes this.
 *
 * lvm-text.c parses LVM2's text metadata format into a tree of nodes;
 * lvm-disk.c (lvm-disk.h) reads the on-disk label, PV header and
 * metadata areas; lvm.c builds volume groups from the newest metadata
 * and opens volumes.
 */
#ifndef IMGFS_LVM_INT_H
#define IMGFS_LVM_INT_H

#include "lvm.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Bounds of the text parser: nesting, nodes and text size. */
#define LVM_TEXT_MAX_DEPTH 32
#define LVM_TEXT_MAX_NODES (1u << 20)
#define LVM_TEXT_MAX_BYTES (16u << 20)
/* Nodes one scan parses in all its copies (about 100 bytes each). */
#define LVM_SCAN_MAX_NODES (4u << 20)

enum lvm_node_kind {
	LVM_NODE_INT,
	LVM_NODE_FLOAT,   /* kept as text: nothing we read is a float */
	LVM_NODE_STRING,
	LVM_NODE_ARRAY,   /* children are the elements, keys NULL */
	LVM_NODE_SECTION, /* children are the entries */
};

struct lvm_node {
	enum lvm_node_kind kind;
	char *key;             /* NULL for array elements */
	int64_t num;           /* LVM_NODE_INT */
	char *str;             /* LVM_NODE_STRING (unescaped), FLOAT text */
	struct lvm_node *child; /* first child (array, section) */
	struct lvm_node *next;  /* next sibling */
	size_t nb_children;
};

/* Parses len bytes of text (stops at a NUL byte, as lvm2 writes one
 * after the text). Returns 0 and the root section, or -EINVAL with a
 * one-line reason in why (line number and what was expected) or -ENOMEM.
 * budget, when not NULL, bounds the nodes too and is lowered by the
 * nodes made (even on failure). */
int lvm_text_parse(const char *text, size_t len, size_t *budget,
		   struct lvm_node **root_r, char *why, size_t why_len);
void lvm_text_free(struct lvm_node *node);

/* The first child of section named key, of any kind, or NULL. */
const struct lvm_node *lvm_node_get(const struct lvm_node *sec,
				    const char *key);
/* The integer / string value of key; false when absent or of another
 * kind. */
bool lvm_node_int(const struct lvm_node *sec, const char *key, int64_t *v_r);
const char *lvm_node_str(const struct lvm_node *sec, const char *key);
/* True when the array key holds the string s (status flags). */
bool lvm_node_has_flag(const struct lvm_node *sec, const char *key,
		       const char *s);

/* lvm2's checksum (lib/misc/crc.c's facts): CRC-32 with the reflected
 * polynomial 0xedb88320, no final inversion, started at LVM_CRC_INITIAL
 * or at a previous result to continue over a second buffer. */
#define LVM_CRC_INITIAL 0xf597a6cfu
uint32_t lvm_crc(uint32_t crc, const void *buf, size_t len);

#endif
