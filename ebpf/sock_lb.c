// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Ferryman's socket-level load balancer: cgroup sock_addr hooks that send a socket asking for a VIP
 * straight to a backend (connect, unconnected UDP sendmsg), and make replies and getpeername()
 * show the VIP again (recvmsg, getpeername). No per-packet work, no NAT table: the decision is made
 * once per connect (per datagram for unconnected UDP, sticky per socket).
 *
 * User space (src/fastpath/) owns every map write; the programs only read fm_services, fm_backends
 * and fm_maglev, and write fm_rev and fm_stats. Update order in user space guarantees that a lookup
 * never sees a slot number >= count that is not written, nor an empty slot below count.
 *
 * Build: clang-19 -O2 -g -target bpf -c sock_lb.c (build.rs).
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "sock_lb.h"

#define ECONNREFUSED 111

/* Sizes here are placeholders: the loader sets max_entries from the config before loading. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct fm_service_key);
	__type(value, struct fm_service);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fm_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct fm_backend_key);
	__type(value, struct fm_backend);
	__uint(max_entries, 262144);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fm_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, FM_MAGLEV_M);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fm_maglev SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct fm_rev_key);
	__type(value, struct fm_rev);
	__uint(max_entries, 262144);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fm_rev SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct fm_stats);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fm_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct fm_meta);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fm_meta SEC(".maps");

enum fm_hook { FM_CONNECT, FM_SENDMSG };

/* splitmix64 finaliser: spreads sequential socket cookies over the whole range. */
static __always_inline __u32 fm_mix(__u64 x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return (__u32)x;
}

static __always_inline struct fm_stats *fm_stats_of(__u32 id)
{
	return bpf_map_lookup_elem(&fm_stats, &id);
}

/*
 * Picks a backend of `svc`. Connect: uniformly at random (a connection is decided once; this is
 * what Cilium's socket LB does). Unconnected UDP sendmsg: by the socket cookie, so every datagram
 * of one socket goes to one backend while the backend set is unchanged; with a Maglev table, also
 * across changes of the set, except for the sockets of a backend that left.
 */
static __always_inline struct fm_backend *fm_pick(const struct fm_service *svc, __u32 key)
{
	struct fm_backend_key bk = { .id = svc->id };
	__u32 count = svc->count;

	if (svc->ring != FM_NO_RING) {
		__u32 pos = svc->ring * FM_MAGLEV_M + key % FM_MAGLEV_M;
		__u32 *slot = bpf_map_lookup_elem(&fm_maglev, &pos);

		if (!slot)
			return NULL;
		bk.slot = *slot | svc->bank;
	} else {
		bk.slot = (key % count) | svc->bank;
	}
	return bpf_map_lookup_elem(&fm_backends, &bk);
}

static __always_inline void fm_remember(void *ctx, const struct fm_backend *be,
					const struct fm_service_key *vip)
{
	struct fm_rev_key rk = {
		.cookie = bpf_get_socket_cookie(ctx),
		.addr = { be->addr[0], be->addr[1], be->addr[2], be->addr[3] },
		.port = be->port,
		.family = be->family,
	};
	struct fm_rev rv = {
		.addr = { vip->addr[0], vip->addr[1], vip->addr[2], vip->addr[3] },
		.port = vip->port,
		.family = vip->family,
	};

	bpf_map_update_elem(&fm_rev, &rk, &rv, BPF_ANY);
}

/*
 * Looks the VIP up and chooses a backend. Returns the backend, or NULL with *refuse set when the
 * VIP has no healthy backend, or NULL alone when the address is not a VIP (or a lookup failed:
 * the socket then goes to the VIP address untouched, where the user-space proxy may serve it).
 */
static __always_inline struct fm_backend *fm_xlate(void *ctx, const struct fm_service_key *vip,
						   enum fm_hook hook, int *refuse)
{
	struct fm_service *svc = bpf_map_lookup_elem(&fm_services, vip);
	struct fm_stats *st;
	struct fm_backend *be;
	__u32 key;

	if (!svc)
		return NULL;
	st = fm_stats_of(svc->id);
	if (svc->count == 0) {
		if (st)
			st->refused++;
		*refuse = 1;
		return NULL;
	}
	key = hook == FM_CONNECT ? bpf_get_prandom_u32() : fm_mix(bpf_get_socket_cookie(ctx));
	be = fm_pick(svc, key);
	if (!be || be->family != vip->family) {
		if (st)
			st->errors++;
		return NULL;
	}
	if (st) {
		if (hook == FM_CONNECT)
			st->connect++;
		else
			st->sendmsg++;
	}
	fm_remember(ctx, be, vip);
	return be;
}

static __always_inline int fm_refuse(void)
{
	/* A bare "return 0" makes connect() fail with EPERM; a VIP without backends is a refused
	 * connection, as with the user-space proxy. */
	bpf_set_retval(-ECONNREFUSED);
	return 0;
}

static __always_inline int fm_v4(struct bpf_sock_addr *ctx, enum fm_hook hook)
{
	struct fm_service_key vip = {
		.addr = { ctx->user_ip4 },
		.port = (__u16)ctx->user_port,
		.proto = (__u8)ctx->protocol,
		.family = FM_FAMILY_V4,
	};
	int refuse = 0;
	struct fm_backend *be = fm_xlate(ctx, &vip, hook, &refuse);

	if (refuse)
		return fm_refuse();
	if (be) {
		ctx->user_ip4 = be->addr[0];
		ctx->user_port = be->port;
	}
	return 1;
}

/* An IPv4-mapped IPv6 address (::ffff:a.b.c.d) on a dual-stack socket. */
static __always_inline int fm_v4_mapped(const __u32 *a)
{
	return a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0x0000ffff);
}

static __always_inline int fm_v6(struct bpf_sock_addr *ctx, enum fm_hook hook)
{
	struct fm_service_key vip = {
		.port = (__u16)ctx->user_port,
		.proto = (__u8)ctx->protocol,
	};
	int refuse = 0, mapped;
	struct fm_backend *be;

	vip.addr[0] = ctx->user_ip6[0];
	vip.addr[1] = ctx->user_ip6[1];
	vip.addr[2] = ctx->user_ip6[2];
	vip.addr[3] = ctx->user_ip6[3];
	mapped = fm_v4_mapped(vip.addr);
	if (mapped) {
		vip.addr[0] = vip.addr[3];
		vip.addr[1] = vip.addr[2] = vip.addr[3] = 0;
		vip.family = FM_FAMILY_V4;
	} else {
		vip.family = FM_FAMILY_V6;
	}
	be = fm_xlate(ctx, &vip, hook, &refuse);
	if (refuse)
		return fm_refuse();
	if (!be)
		return 1;
	if (mapped) {
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = bpf_htonl(0x0000ffff);
		ctx->user_ip6[3] = be->addr[0];
	} else {
		ctx->user_ip6[0] = be->addr[0];
		ctx->user_ip6[1] = be->addr[1];
		ctx->user_ip6[2] = be->addr[2];
		ctx->user_ip6[3] = be->addr[3];
	}
	ctx->user_port = be->port;
	return 1;
}

/* recvmsg and getpeername: a backend the socket was sent to is shown as the VIP it asked for. */
static __always_inline int fm_rev_v4(struct bpf_sock_addr *ctx)
{
	struct fm_rev_key rk = {
		.cookie = bpf_get_socket_cookie(ctx),
		.addr = { ctx->user_ip4 },
		.port = (__u16)ctx->user_port,
		.family = FM_FAMILY_V4,
	};
	struct fm_rev *rv = bpf_map_lookup_elem(&fm_rev, &rk);

	if (rv && rv->family == FM_FAMILY_V4) {
		ctx->user_ip4 = rv->addr[0];
		ctx->user_port = rv->port;
	}
	return 1;
}

static __always_inline int fm_rev_v6(struct bpf_sock_addr *ctx)
{
	struct fm_rev_key rk = {
		.cookie = bpf_get_socket_cookie(ctx),
		.port = (__u16)ctx->user_port,
	};
	struct fm_rev *rv;
	int mapped;

	rk.addr[0] = ctx->user_ip6[0];
	rk.addr[1] = ctx->user_ip6[1];
	rk.addr[2] = ctx->user_ip6[2];
	rk.addr[3] = ctx->user_ip6[3];
	mapped = fm_v4_mapped(rk.addr);
	if (mapped) {
		rk.addr[0] = rk.addr[3];
		rk.addr[1] = rk.addr[2] = rk.addr[3] = 0;
		rk.family = FM_FAMILY_V4;
	} else {
		rk.family = FM_FAMILY_V6;
	}
	rv = bpf_map_lookup_elem(&fm_rev, &rk);
	if (!rv || rv->family != rk.family)
		return 1;
	if (mapped) {
		ctx->user_ip6[3] = rv->addr[0];
	} else {
		ctx->user_ip6[0] = rv->addr[0];
		ctx->user_ip6[1] = rv->addr[1];
		ctx->user_ip6[2] = rv->addr[2];
		ctx->user_ip6[3] = rv->addr[3];
	}
	ctx->user_port = rv->port;
	return 1;
}

SEC("cgroup/connect4")
int fm_connect4(struct bpf_sock_addr *ctx)
{
	return fm_v4(ctx, FM_CONNECT);
}

SEC("cgroup/connect6")
int fm_connect6(struct bpf_sock_addr *ctx)
{
	return fm_v6(ctx, FM_CONNECT);
}

SEC("cgroup/sendmsg4")
int fm_sendmsg4(struct bpf_sock_addr *ctx)
{
	return fm_v4(ctx, FM_SENDMSG);
}

SEC("cgroup/sendmsg6")
int fm_sendmsg6(struct bpf_sock_addr *ctx)
{
	return fm_v6(ctx, FM_SENDMSG);
}

SEC("cgroup/recvmsg4")
int fm_recvmsg4(struct bpf_sock_addr *ctx)
{
	return fm_rev_v4(ctx);
}

SEC("cgroup/recvmsg6")
int fm_recvmsg6(struct bpf_sock_addr *ctx)
{
	return fm_rev_v6(ctx);
}

SEC("cgroup/getpeername4")
int fm_getpeername4(struct bpf_sock_addr *ctx)
{
	return fm_rev_v4(ctx);
}

SEC("cgroup/getpeername6")
int fm_getpeername6(struct bpf_sock_addr *ctx)
{
	return fm_rev_v6(ctx);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
