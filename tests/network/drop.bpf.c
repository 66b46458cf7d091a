// SPDX-License-Identifier: GPL-2.0
// A packet-loss injector for isoscope's network tests: a tc classifier (clsact egress, cls_bpf
// direct action) that drops a configurable share of IPv4 TCP packets carrying payload. Packets
// without payload and every SYN, FIN or RST pass, so connections still open and close.
//
// Configuration: the one-entry array map drop_cfg (struct drop_cfg below), written by the test
// with `bpftool map update id <id> key 0 0 0 0 value <16 bytes>` after `tc filter add ... bpf da
// obj drop.bpf.o sec tc`. All zero (the initial value) drops nothing.
// Counters: drop_stats[0] = packets that matched the filter (TCP payload, ports), [1] = dropped.
//
// Build: clang -O2 -g -target bpf -c drop.bpf.c -o drop.bpf.o (tests/CMakeLists.txt).
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define ETH_HLEN_ 14
#define ETH_P_IP_BE 0x0008 /* htons(0x0800) */
#define IPPROTO_TCP_ 6
#define TC_ACT_OK_ 0
#define TC_ACT_SHOT_ 2

struct drop_cfg {
  __u32 pct;    /* 0..100: share of matching packets dropped */
  __u32 sport;  /* TCP source port (host order), 0: any */
  __u32 dport;  /* TCP destination port (host order), 0: any */
  __u32 pad;
};

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct drop_cfg);
} drop_cfg SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 2);
  __type(key, __u32);
  __type(value, __u64);
} drop_stats SEC(".maps");

static __always_inline void count(__u32 idx) {
  __u64* v = bpf_map_lookup_elem(&drop_stats, &idx);
  if (v) __sync_fetch_and_add(v, 1);
}

SEC("tc")
int drop_tcp_payload(struct __sk_buff* skb) {
  __u32 zero = 0;
  struct drop_cfg* cfg = bpf_map_lookup_elem(&drop_cfg, &zero);
  if (!cfg || cfg->pct == 0) return TC_ACT_OK_;
  if (skb->protocol != ETH_P_IP_BE) return TC_ACT_OK_;

  __u8 ip[20];
  if (bpf_skb_load_bytes(skb, ETH_HLEN_, ip, sizeof(ip)) < 0) return TC_ACT_OK_;
  if ((ip[0] >> 4) != 4 || ip[9] != IPPROTO_TCP_) return TC_ACT_OK_;
  __u32 ihl = (ip[0] & 0xf) * 4;
  __u32 tot_len = ((__u32)ip[2] << 8) | ip[3];
  if (ihl < 20 || ihl > 60) return TC_ACT_OK_;

  __u8 tcp[14];
  if (bpf_skb_load_bytes(skb, ETH_HLEN_ + ihl, tcp, sizeof(tcp)) < 0) return TC_ACT_OK_;
  __u32 sport = ((__u32)tcp[0] << 8) | tcp[1];
  __u32 dport = ((__u32)tcp[2] << 8) | tcp[3];
  __u32 doff = (tcp[12] >> 4) * 4;
  __u8 flags = tcp[13];  /* CWR ECE URG ACK PSH RST SYN FIN */
  if (flags & 0x07) return TC_ACT_OK_;  /* FIN, SYN, RST */
  if (cfg->sport && cfg->sport != sport) return TC_ACT_OK_;
  if (cfg->dport && cfg->dport != dport) return TC_ACT_OK_;
  /* A GSO packet's IP total length is that of its first segment or 0; the skb length tells
   * whether any payload follows the headers. */
  __u32 hdrs = ETH_HLEN_ + ihl + doff;
  if (skb->len <= hdrs && tot_len <= ihl + doff) return TC_ACT_OK_;

  count(0);
  if (bpf_get_prandom_u32() % 100 < cfg->pct) {
    count(1);
    return TC_ACT_SHOT_;
  }
  return TC_ACT_OK_;
}

char LICENSE[] SEC("license") = "GPL";
