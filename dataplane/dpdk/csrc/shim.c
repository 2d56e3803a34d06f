/*
 * flowsteer's C shim over DPDK: the static inline functions Rust cannot call
 * (rx/tx burst, mbuf alloc/free/refcount, lcore id, errno) and the calls that
 * take DPDK structs, so Rust never depends on a DPDK struct layout. Every
 * struct crossing the boundary is defined here and mirrored in src/ffi.rs.
 * Per-packet work happens inside one call per burst.
 */
#include <errno.h>
#include <string.h>

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_thash.h>

/* One received or allocated buffer: where its data starts, its length, and
 * the room from the data start to the end of the buffer. */
struct fs_seg {
	uint8_t *data;
	uint32_t len;
	uint32_t room;
};

/* What flowsteer needs to know about a device before configuring it. */
struct fs_dev_info {
	char driver[64];
	uint16_t max_rx_queues;
	uint16_t max_tx_queues;
	uint16_t min_mtu;
	uint16_t max_mtu;
	uint64_t rss_offloads;
	uint8_t hash_key_size;
	int32_t socket;
};

/* Device counters (rte_eth_stats without the per-queue arrays). */
struct fs_stats {
	uint64_t ipackets, opackets, ibytes, obytes, imissed, ierrors, oerrors, rx_nombuf;
};

int fs_errno(void) { return rte_errno; }

unsigned fs_lcore_id(void) { return rte_lcore_id(); }

uint16_t fs_pktmbuf_headroom(void) { return RTE_PKTMBUF_HEADROOM; }

static inline void fs_fill_seg(struct rte_mbuf *m, struct fs_seg *s)
{
	s->data = rte_pktmbuf_mtod(m, uint8_t *);
	s->len = rte_pktmbuf_data_len(m);
	s->room = m->buf_len - m->data_off;
}

/* Receives up to n packets from (port, queue). Fills mbufs[i] and segs[i] for
 * each kept packet and returns how many. Multi-segment packets (a frame
 * larger than one mbuf: the mbuf size follows the configured MTU, so only a
 * peer ignoring it sends them) are freed and counted in *dropped. */
uint16_t fs_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **mbufs, struct fs_seg *segs, uint16_t n,
		     uint64_t *dropped)
{
	uint16_t got = rte_eth_rx_burst(port, queue, mbufs, n);
	uint16_t kept = 0;
	for (uint16_t i = 0; i < got; i++) {
		struct rte_mbuf *m = mbufs[i];
		if (unlikely(m->nb_segs != 1)) {
			rte_pktmbuf_free(m);
			(*dropped)++;
			continue;
		}
		mbufs[kept] = m;
		fs_fill_seg(m, &segs[kept]);
		kept++;
	}
	return kept;
}

/* Sets each mbuf's length to lens[i], cut to the room from its data start
 * to the end of its buffer (so a device never reads past the buffer; a cut
 * length is written back to lens[i], so the caller counts what went out),
 * transmits on (port, queue), and frees what the device did not take.
 * Returns how many were sent. */
uint16_t fs_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **mbufs, uint32_t *lens, uint16_t n)
{
	for (uint16_t i = 0; i < n; i++) {
		struct rte_mbuf *m = mbufs[i];
		uint32_t room = (uint32_t)m->buf_len - m->data_off;
		if (unlikely(lens[i] > room))
			lens[i] = room;
		m->data_len = (uint16_t)lens[i];
		m->pkt_len = lens[i];
	}
	uint16_t sent = rte_eth_tx_burst(port, queue, mbufs, n);
	if (unlikely(sent < n))
		rte_pktmbuf_free_bulk(mbufs + sent, n - sent);
	return sent;
}

/* An empty mbuf from mp, or NULL when the pool is empty. */
struct rte_mbuf *fs_mbuf_alloc(struct rte_mempool *mp, struct fs_seg *seg)
{
	struct rte_mbuf *m = rte_pktmbuf_alloc(mp);
	if (m != NULL)
		fs_fill_seg(m, seg);
	return m;
}

void fs_mbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }

void fs_mbuf_ref(struct rte_mbuf *m) { rte_mbuf_refcnt_update(m, 1); }

uint16_t fs_mbuf_refcnt(const struct rte_mbuf *m) { return rte_mbuf_refcnt_read(m); }

int fs_dev_info(uint16_t port, struct fs_dev_info *out)
{
	struct rte_eth_dev_info info;
	int rc = rte_eth_dev_info_get(port, &info);
	if (rc != 0)
		return rc;
	memset(out, 0, sizeof(*out));
	if (info.driver_name != NULL)
		strncpy(out->driver, info.driver_name, sizeof(out->driver) - 1);
	out->max_rx_queues = info.max_rx_queues;
	out->max_tx_queues = info.max_tx_queues;
	out->min_mtu = info.min_mtu;
	out->max_mtu = info.max_mtu;
	out->rss_offloads = info.flow_type_rss_offloads;
	out->hash_key_size = info.hash_key_size;
	out->socket = rte_eth_dev_socket_id(port);
	return 0;
}

/* The RSS key flowsteer configures, len bytes: 0x6d5a repeated. Under a
 * Toeplitz hash with this key a flow and its reverse (addresses and ports
 * swapped) hash alike, so both directions reach the same queue. */
void fs_symmetric_rss_key(uint8_t *key, unsigned len)
{
	for (unsigned i = 0; i < len; i++)
		key[i] = (i & 1) ? 0x5a : 0x6d;
}

/* DPDK's software Toeplitz hash (what a NIC computes) of an IPv4 TCP/UDP
 * 4-tuple, host byte order, under key (at least 16 bytes): for tests. */
uint32_t fs_softrss_ipv4(const uint8_t *key, uint32_t src, uint32_t dst, uint16_t sport, uint16_t dport)
{
	uint32_t tuple[3] = { src, dst, (uint32_t)sport << 16 | dport };
	return rte_softrss(tuple, 3, key);
}

/* Configures a stopped device: nrxq receive queues filled from mp, ntxq
 * transmit queues, descriptor counts (adjusted to the device's limits; the
 * counts used are written back), the MTU when mtu != 0, and with several
 * receive queues RSS over IP/TCP/UDP/SCTP with the symmetric Toeplitz key
 * of fs_symmetric_rss_key when the device
 * supports it; *rss says whether it does. On failure returns a negative errno
 * and *stage says which step failed (1 configure, 2 descriptors, 3 rx queue,
 * 4 tx queue). */
int fs_dev_configure(uint16_t port, uint16_t nrxq, uint16_t ntxq, uint16_t *nrxd, uint16_t *ntxd, uint32_t mtu,
		     struct rte_mempool *mp, int *rss, int *stage)
{
	struct rte_eth_dev_info info;
	struct rte_eth_conf conf;
	uint8_t key[256];
	int rc = rte_eth_dev_info_get(port, &info);
	*stage = 1;
	*rss = 0;
	if (rc != 0)
		return rc;
	memset(&conf, 0, sizeof(conf));
	uint64_t hf = (RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP | RTE_ETH_RSS_SCTP) & info.flow_type_rss_offloads;
	if (nrxq > 1 && hf != 0) {
		uint8_t len = info.hash_key_size ? info.hash_key_size : 40;
		fs_symmetric_rss_key(key, len);
		conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
		conf.rx_adv_conf.rss_conf.rss_key = key;
		conf.rx_adv_conf.rss_conf.rss_key_len = len;
		conf.rx_adv_conf.rss_conf.rss_hf = hf;
		*rss = 1;
	}
	if (mtu != 0)
		conf.rxmode.mtu = mtu;
	rc = rte_eth_dev_configure(port, nrxq, ntxq, &conf);
	if (rc != 0)
		return rc;
	*stage = 2;
	rc = rte_eth_dev_adjust_nb_rx_tx_desc(port, nrxd, ntxd);
	if (rc != 0)
		return rc;
	int socket = rte_eth_dev_socket_id(port);
	unsigned sock = socket < 0 ? (unsigned)SOCKET_ID_ANY : (unsigned)socket;
	*stage = 3;
	for (uint16_t q = 0; q < nrxq; q++) {
		rc = rte_eth_rx_queue_setup(port, q, *nrxd, sock, NULL, mp);
		if (rc != 0)
			return rc;
	}
	*stage = 4;
	for (uint16_t q = 0; q < ntxq; q++) {
		rc = rte_eth_tx_queue_setup(port, q, *ntxd, sock, NULL);
		if (rc != 0)
			return rc;
	}
	return 0;
}

/* 1 when the link is up, 0 when down, a negative errno when unknown. */
int fs_link_up(uint16_t port)
{
	struct rte_eth_link link;
	int rc = rte_eth_link_get_nowait(port, &link);
	if (rc != 0)
		return rc;
	return link.link_status == RTE_ETH_LINK_UP;
}

int fs_stats(uint16_t port, struct fs_stats *out)
{
	struct rte_eth_stats st;
	int rc = rte_eth_stats_get(port, &st);
	if (rc != 0)
		return rc;
	out->ipackets = st.ipackets;
	out->opackets = st.opackets;
	out->ibytes = st.ibytes;
	out->obytes = st.obytes;
	out->imissed = st.imissed;
	out->ierrors = st.ierrors;
	out->oerrors = st.oerrors;
	out->rx_nombuf = st.rx_nombuf;
	return 0;
}
