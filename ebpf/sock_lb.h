/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Map layouts shared by sock_lb.c (kernel side) and src/fastpath/layout.rs (user space, #[repr(C)]
 * mirrors with a size/offset test). Change a layout => bump FM_LAYOUT_VERSION, so that a Ferryman
 * that finds maps pinned by an older build replaces them instead of misreading them.
 *
 * Addresses and ports are in network byte order, as the kernel hands them to cgroup sock_addr
 * programs. An IPv4 address sits in addr[0] with addr[1..3] zero.
 */
#ifndef FERRYMAN_SOCK_LB_H
#define FERRYMAN_SOCK_LB_H

#include <linux/types.h>

#define FM_LAYOUT_VERSION 1

#define FM_FAMILY_V4 4
#define FM_FAMILY_V6 6

/* Maglev ring size per table (prime). A service with a table picks ring[hash % FM_MAGLEV_M]. */
#define FM_MAGLEV_M 4099
/* fm_service.ring when the service has no Maglev table (uniform random / per-socket hash). */
#define FM_NO_RING 0xffffffffu
/* Backend slots of the second bank (Maglev services swap banks with their tables). */
#define FM_BANK_B 0x80000000u

/* fm_services key: one VIP (address, port, IP protocol). */
struct fm_service_key {
	__u32 addr[4];
	__u16 port;  /* network order */
	__u8 proto;  /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 family; /* FM_FAMILY_V4 or FM_FAMILY_V6 */
};

/* fm_services value. */
struct fm_service {
	__u32 id;    /* index into fm_stats, and the service part of fm_backend_key */
	__u32 count; /* live slots: 0 = no healthy backend => refuse with ECONNREFUSED */
	__u32 ring;  /* Maglev table index into fm_maglev (ring * FM_MAGLEV_M), or FM_NO_RING */
	__u32 bank;  /* 0 or FM_BANK_B: OR-ed into slot numbers */
};

/* fm_backends key: slot `slot` (| bank) of service `id`. */
struct fm_backend_key {
	__u32 id;
	__u32 slot;
};

/* fm_backends value, and the address half of the reverse map. */
struct fm_backend {
	__u32 addr[4];
	__u16 port; /* network order */
	__u8 family;
	__u8 pad;
};

/* fm_rev key: the backend a socket was sent to (for recvmsg and getpeername). */
struct fm_rev_key {
	__u64 cookie; /* bpf_get_socket_cookie */
	__u32 addr[4];
	__u16 port;
	__u8 family;
	__u8 pad[5];
};

/* fm_rev value: the VIP the socket asked for. */
struct fm_rev {
	__u32 addr[4];
	__u16 port;
	__u8 family;
	__u8 pad;
};

/* fm_stats (per-CPU array indexed by service id). */
struct fm_stats {
	__u64 connect;  /* connect() rewrites (TCP and connected UDP) */
	__u64 sendmsg;  /* unconnected UDP sendmsg rewrites */
	__u64 refused;  /* refused: no healthy backend */
	__u64 errors;   /* a slot lookup failed (the VIP was left untouched) */
};

/* fm_meta[0]. */
struct fm_meta {
	__u32 version; /* FM_LAYOUT_VERSION of the build that created the maps */
	__u32 pad;
};

#endif
