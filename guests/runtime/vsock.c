/* virtio-vsock driver and a small stream socket API (virtio 1.x §5.10). The guest only
 * listens: the host connects (REQUEST), the guest answers RESPONSE or RST. Credit-based flow
 * control both ways: the guest advertises its per-connection receive ring (buf_alloc) and how
 * much of it the app consumed (fwd_cnt); it sends no more than the peer's buf_alloc allows.
 * Every byte of connection state lives in guest RAM, so it migrates with the VM. Packets from
 * the host that do not fit the protocol are dropped or answered with RST, never trusted. */
#include "virtio.h"

#define VIRTIO_ID_VSOCK 19u
#define F_STREAM        0u

#define HDR 44u
#define RX_PAYLOAD 4096u
#define RX_BUF (HDR + RX_PAYLOAD)
#define TX_PAYLOAD 4096u
#define TX_BUF (HDR + TX_PAYLOAD)
#define NQ 64u                       /* rx and tx descriptors */
#define NEVENTS 4u
#define MAX_LISTEN 8u
#define RAW_RSTS 16u
#define CLOSE_TIMEOUT (2 * TIMEBASE_HZ)     /* from our SHUTDOWN to the peer's RST */
#define DRAIN_TIMEOUT (10 * TIMEBASE_HZ)    /* from close to our SHUTDOWN (buffered data out) */

enum { OP_INVALID, OP_REQUEST, OP_RESPONSE, OP_RST, OP_SHUTDOWN, OP_RW, OP_CREDIT_UPDATE, OP_CREDIT_REQUEST };
#define TYPE_STREAM 1u
#define SHUT_RCV  1u
#define SHUT_SEND 2u

/* connection states */
enum { C_FREE, C_PENDING, C_OPEN, C_CLOSING, C_DEAD };
/* control packets waiting for a tx buffer */
#define P_RESPONSE 1u
#define P_CREDIT   2u
#define P_RST      4u
#define P_CREDIT_REQ 8u

struct conn {
    uint8_t state, peer_shut, shut_sent, pending;
    int8_t listener;
    uint8_t credit_req_sent, pad[2];
    uint32_t seq;                    /* arrival order, for accept */
    uint32_t lport, pport, pcid_lo, pcid_hi;
    uint32_t peer_buf_alloc, peer_fwd_cnt, tx_cnt;
    uint32_t fwd_cnt, fwd_sent;
    uint32_t rx_head, rx_len, tx_head, tx_len;
    uint64_t deadline;
    uint8_t *rx, *tx;
};

struct raw_rst { uint32_t src_port, dst_port, cid_lo, cid_hi; };

static struct virtio_dev *dev;
static struct virtq *rxq, *txq, *evq;
static uint8_t *rx_bufs, *tx_bufs;
static uint32_t *ev_bufs;
static uint16_t tx_free[NQ], tx_nfree;
static struct conn *conns;
static uint32_t nconns, bufsize, next_seq;
static uint32_t hi, npending;       /* one past the highest slot in use; unaccepted connections */
/* One bit per connection: it has something to send (or is closing), so flushes look only at
 * those; and it has news for the app (data, room, state), so apps look only at those. */
#define BITMAP_WORDS (1024u / 32u)
static uint32_t work_bits[BITMAP_WORDS], event_bits[BITMAP_WORDS];

static inline uint32_t idx(const struct conn *c) { return (uint32_t)(c - conns); }
static inline void mark_work(const struct conn *c) { work_bits[idx(c) >> 5] |= 1u << (idx(c) & 31); }
static inline void mark_event(const struct conn *c) { event_bits[idx(c) >> 5] |= 1u << (idx(c) & 31); }
static uint32_t listen_port[MAX_LISTEN], nlisten;
static struct raw_rst raw_rsts[RAW_RSTS];
static uint32_t nraw;
static uint32_t cid_lo, cid_hi;
static struct vsock_stats stats;

const struct vsock_stats *vsock_get_stats(void) { return &stats; }

static inline uint16_t ld16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t ld32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static inline void st16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static inline void st32(uint8_t *p, uint32_t v) { st16(p, v); st16(p + 2, v >> 16); }

static void read_cid(void)
{
    cid_lo = virtio_config32(dev, 0);
    cid_hi = virtio_config32(dev, 4);
}

static void post_rx(uint8_t *buf)
{
    struct virtq_seg s = { buf, RX_BUF, 1 };
    virtq_add(rxq, &s, 1, buf);
}

static void post_event(uint32_t *buf)
{
    struct virtq_seg s = { buf, 4, 1 };
    virtq_add(evq, &s, 1, buf);
}

int vsock_init(uint32_t max_conns, uint32_t buf_bytes)
{
    if (max_conns == 0 || max_conns > 1024 || buf_bytes < 4096 || buf_bytes > (1u << 20) ||
        (buf_bytes & (buf_bytes - 1))) {
        printf("vsock: want 1..1024 connections and a power-of-two buffer of 4K..1M\n");
        return -1;
    }
    dev = virtio_open(VIRTIO_ID_VSOCK, 1ull << F_STREAM);
    if (!dev)
        return -1;
    rxq = virtq_setup(dev, 0, NQ);
    txq = virtq_setup(dev, 1, NQ);
    evq = virtq_setup(dev, 2, NEVENTS);
    rx_bufs = region_alloc(NQ * RX_BUF);
    tx_bufs = region_alloc(NQ * TX_BUF);
    ev_bufs = region_alloc(PAGE_SIZE);
    conns = region_alloc(max_conns * sizeof(struct conn));
    uint8_t *data = region_alloc((size_t)max_conns * 2 * buf_bytes);
    if (!rxq || !txq || !evq || !rx_bufs || !tx_bufs || !ev_bufs || !conns || !data) {
        printf("vsock: cannot set up the queues and %u connections of 2x%u bytes\n", max_conns, buf_bytes);
        return -1;
    }
    nconns = max_conns;
    bufsize = buf_bytes;
    memset(conns, 0, max_conns * sizeof(struct conn));
    for (uint32_t i = 0; i < max_conns; i++) {
        conns[i].rx = data + (size_t)i * 2 * buf_bytes;
        conns[i].tx = conns[i].rx + buf_bytes;
    }
    for (uint32_t i = 0; i < rxq->size; i++)
        post_rx(rx_bufs + i * RX_BUF);
    for (uint32_t i = 0; i < evq->size; i++)
        post_event(ev_bufs + 2 * i);
    tx_nfree = txq->size;
    for (uint16_t i = 0; i < txq->size; i++)
        tx_free[i] = i;
    virtio_ready(dev);
    read_cid();
    virtq_kick(rxq);
    virtq_kick(evq);
    return 0;
}

uint32_t vsock_guest_cid(void) { return cid_lo; }

/* ---- transmit ---- */

static int reap_tx(void)
{
    void *cookie;
    uint32_t n;
    int k = 0;
    while (virtq_get(txq, &cookie, &n)) {
        tx_free[tx_nfree++] = (uint16_t)(((uint8_t *)cookie - tx_bufs) / TX_BUF);
        k++;
    }
    return k;
}

static uint8_t *tx_take(void)
{
    if (!tx_nfree)
        reap_tx();
    if (!tx_nfree)
        return 0;
    return tx_bufs + tx_free[--tx_nfree] * TX_BUF;
}

static int txed;     /* packets queued since the last kick */

static void tx_put(uint8_t *buf, uint32_t len)
{
    struct virtq_seg s = { buf, HDR + len, 0 };
    virtq_add(txq, &s, 1, buf);     /* cannot fail: one descriptor per tx buffer */
    txed++;
    stats.tx_packets++;
}

static void fill_hdr(uint8_t *h, uint32_t dcid_lo, uint32_t dcid_hi, uint32_t sport, uint32_t dport,
                     uint32_t len, uint32_t op, uint32_t flags, uint32_t buf_alloc, uint32_t fwd)
{
    st32(h + 0, cid_lo); st32(h + 4, cid_hi);
    st32(h + 8, dcid_lo); st32(h + 12, dcid_hi);
    st32(h + 16, sport); st32(h + 20, dport);
    st32(h + 24, len);
    st16(h + 28, TYPE_STREAM); st16(h + 30, op);
    st32(h + 32, flags);
    st32(h + 36, buf_alloc); st32(h + 40, fwd);
}

/* Sends a payload-less packet on c; 0 if there was no tx buffer. */
static int tx_ctrl(struct conn *c, uint32_t op, uint32_t flags)
{
    uint8_t *b = tx_take();
    if (!b)
        return 0;
    fill_hdr(b, c->pcid_lo, c->pcid_hi, c->lport, c->pport, 0, op, flags, bufsize, c->fwd_cnt);
    c->fwd_sent = c->fwd_cnt;
    tx_put(b, 0);
    return 1;
}

static void conn_free(struct conn *c)
{
    uint8_t *rx = c->rx, *tx = c->tx;
    if (c->state == C_PENDING)
        npending--;
    work_bits[idx(c) >> 5] &= ~(1u << (idx(c) & 31));
    event_bits[idx(c) >> 5] &= ~(1u << (idx(c) & 31));
    memset(c, 0, sizeof *c);
    c->rx = rx;
    c->tx = tx;
    while (hi && conns[hi - 1].state == C_FREE)   /* loops scan only up to the last slot in use */
        hi--;
}

static uint32_t credit(const struct conn *c)
{
    uint32_t in_flight = c->tx_cnt - c->peer_fwd_cnt;
    return in_flight >= c->peer_buf_alloc ? 0 : c->peer_buf_alloc - in_flight;
}

/* Sends what c has waiting: control packets first, then data as credit allows, then the
 * SHUTDOWN of a closing connection. */
static void flush_conn(struct conn *c)
{
    if (c->state == C_FREE)
        return;
    if (c->pending & P_RST) {
        if (!tx_ctrl(c, OP_RST, 0))
            return;
        if (c->state == C_DEAD)
            c->pending = 0;                         /* the app still holds it: freed on close */
        else
            conn_free(c);
        return;
    }
    if ((c->pending & P_RESPONSE)) {
        if (!tx_ctrl(c, OP_RESPONSE, 0))
            return;
        c->pending &= (uint8_t)~P_RESPONSE;
    }
    if (c->state == C_PENDING)
        return;
    if (c->state == C_DEAD) {
        c->tx_len = 0;
        return;
    }
    if (c->peer_shut & SHUT_RCV)
        c->tx_len = 0;                              /* the peer reads no more: discard */
    while (c->tx_len) {
        uint32_t n = credit(c);
        if (!n) {
            if (!c->credit_req_sent && tx_ctrl(c, OP_CREDIT_REQUEST, 0))
                c->credit_req_sent = 1;
            break;
        }
        uint8_t *b = tx_take();
        if (!b)
            return;
        if (n > c->tx_len) n = c->tx_len;
        if (n > TX_PAYLOAD) n = TX_PAYLOAD;
        uint32_t first = bufsize - c->tx_head;
        if (first > n) first = n;
        memcpy(b + HDR, c->tx + c->tx_head, first);
        memcpy(b + HDR + first, c->tx, n - first);
        c->tx_head = (c->tx_head + n) & (bufsize - 1);
        c->tx_len -= n;
        c->tx_cnt += n;
        mark_event(c);
        fill_hdr(b, c->pcid_lo, c->pcid_hi, c->lport, c->pport, n, OP_RW, 0, bufsize, c->fwd_cnt);
        c->fwd_sent = c->fwd_cnt;
        c->pending &= (uint8_t)~P_CREDIT;           /* the header carries the credit */
        tx_put(b, n);
        stats.tx_bytes += n;
    }
    if (c->pending & P_CREDIT) {
        if (!tx_ctrl(c, OP_CREDIT_UPDATE, 0))
            return;
        c->pending &= (uint8_t)~P_CREDIT;
    }
    if (c->state == C_CLOSING && c->tx_len == 0 && !c->shut_sent) {
        if (!tx_ctrl(c, OP_SHUTDOWN, SHUT_RCV | SHUT_SEND))
            return;
        c->shut_sent = 1;
        c->deadline = time_now() + CLOSE_TIMEOUT;
    }
}

static void reset_conn(struct conn *c);

static void flush_all(void)
{
    while (nraw) {
        uint8_t *b = tx_take();
        if (!b)
            break;
        struct raw_rst *r = &raw_rsts[--nraw];
        fill_hdr(b, r->cid_lo, r->cid_hi, r->src_port, r->dst_port, 0, OP_RST, 0, 0, 0);
        tx_put(b, 0);
    }
    uint64_t now = 0;
    for (uint32_t w = 0; w < BITMAP_WORDS && w * 32 < hi; w++) {
        for (uint32_t bits = work_bits[w]; bits; bits &= bits - 1) {
            struct conn *c = &conns[w * 32 + (uint32_t)__builtin_ctz(bits)];
            if (c->state == C_CLOSING && !(c->pending & P_RST)) {
                if (!now)
                    now = time_now();
                if (now >= c->deadline)
                    reset_conn(c);  /* the peer never took our data or answered our SHUTDOWN */
            }
            flush_conn(c);
            if (c->state != C_CLOSING && !c->pending && !c->tx_len)
                work_bits[w] &= ~(1u << (idx(c) & 31));
        }
    }
    if (txed) {
        virtq_kick(txq);
        txed = 0;
    }
}

/* ---- receive ---- */

/* Answers a packet that belongs to no connection with RST (dropped if too many wait). */
static void raw_rst(const uint8_t *h)
{
    if (nraw == RAW_RSTS)
        return;
    struct raw_rst *r = &raw_rsts[nraw++];
    r->src_port = ld32(h + 20);
    r->dst_port = ld32(h + 16);
    r->cid_lo = ld32(h + 0);
    r->cid_hi = ld32(h + 4);
}

static struct conn *find(uint32_t lport, uint32_t pport, uint32_t plo, uint32_t phi)
{
    for (uint32_t i = 0; i < hi; i++) {
        struct conn *c = &conns[i];
        if (c->state != C_FREE && c->lport == lport && c->pport == pport && c->pcid_lo == plo && c->pcid_hi == phi)
            return c;
    }
    return 0;
}

static void reset_conn(struct conn *c)
{
    /* we send RST: an unaccepted connection goes away, an accepted one waits for the app */
    c->pending = P_RST;
    mark_work(c);
    if (c->state == C_OPEN)
        c->state = C_DEAD;
    stats.resets_sent++;
}

static void rx_packet(const uint8_t *h, uint32_t total)
{
    stats.rx_packets++;
    if (total < HDR) { stats.dropped++; return; }
    uint32_t len = ld32(h + 24), op = ld16(h + 30), type = ld16(h + 28);
    if (len > total - HDR || len > RX_PAYLOAD) { stats.dropped++; return; }
    if (ld32(h + 8) != cid_lo || ld32(h + 12) != cid_hi) { stats.dropped++; return; }
    uint32_t plo = ld32(h + 0), phi = ld32(h + 4), pport = ld32(h + 16), lport = ld32(h + 20);
    if (type != TYPE_STREAM) {
        if (op != OP_RST) raw_rst(h);
        stats.dropped++;
        return;
    }
    struct conn *c = find(lport, pport, plo, phi);
    if (op == OP_REQUEST) {
        if (c) { stats.dropped++; return; }          /* a duplicate request */
        uint32_t l;
        for (l = 0; l < nlisten && listen_port[l] != lport; l++)
            ;
        for (uint32_t i = 0; l < nlisten && i < nconns; i++)
            if (conns[i].state == C_FREE) { c = &conns[i]; break; }
        if (!c) { raw_rst(h); stats.refused++; return; }
        c->state = C_PENDING;
        npending++;
        if ((uint32_t)(c - conns) >= hi)
            hi = (uint32_t)(c - conns) + 1;
        c->listener = (int8_t)l;
        c->seq = next_seq++;
        c->lport = lport; c->pport = pport; c->pcid_lo = plo; c->pcid_hi = phi;
        c->peer_buf_alloc = ld32(h + 36);
        c->peer_fwd_cnt = ld32(h + 40);
        c->pending = P_RESPONSE;
        mark_work(c);
        stats.accepted++;
        return;
    }
    if (!c) {
        if (op != OP_RST) raw_rst(h);
        stats.dropped++;
        return;
    }
    c->peer_buf_alloc = ld32(h + 36);
    c->peer_fwd_cnt = ld32(h + 40);
    c->credit_req_sent = 0;
    if (op != OP_RW)
        mark_event(c);                              /* credit, shutdown or reset: look again */
    switch (op) {
    case OP_RW: {
        if ((c->peer_shut & SHUT_SEND) || c->state == C_DEAD || c->state == C_CLOSING) {
            stats.dropped++;
            return;
        }
        if (len > bufsize - c->rx_len) {            /* beyond the credit we gave: protocol error */
            reset_conn(c);
            return;
        }
        uint32_t tail = (c->rx_head + c->rx_len) & (bufsize - 1);
        uint32_t first = bufsize - tail;
        if (first > len) first = len;
        memcpy(c->rx + tail, h + HDR, first);
        memcpy(c->rx, h + HDR + first, len - first);
        c->rx_len += len;
        mark_event(c);
        stats.rx_bytes += len;
        return;
    }
    case OP_CREDIT_UPDATE:
        if (c->tx_len)
            mark_work(c);                           /* more credit: send what waits */
        return;
    case OP_CREDIT_REQUEST:
        c->pending |= P_CREDIT;
        mark_work(c);
        return;
    case OP_SHUTDOWN:
        c->peer_shut |= (uint8_t)(ld32(h + 32) & (SHUT_RCV | SHUT_SEND));
        if (c->peer_shut == (SHUT_RCV | SHUT_SEND) && (c->state == C_CLOSING || c->state == C_PENDING))
            reset_conn(c);                          /* both sides done: RST ends it */
        return;
    case OP_RST:
        stats.resets_received++;
        if (c->state == C_PENDING || c->state == C_CLOSING)
            conn_free(c);
        else {
            c->state = C_DEAD;
            c->pending = 0;
        }
        return;
    default:                                        /* RESPONSE (we never connect), unknown ops */
        reset_conn(c);
        return;
    }
}

static int process(void)
{
    int work = 0;
    void *cookie;
    uint32_t n;
    while (virtq_get(rxq, &cookie, &n)) {
        rx_packet(cookie, n > RX_BUF ? 0 : n);
        post_rx(cookie);
        work++;
    }
    if (work)
        virtq_kick(rxq);
    int events = 0;
    while (virtq_get(evq, &cookie, &n)) {
        uint32_t id = n >= 4 ? *(volatile uint32_t *)cookie : 0xffffffffu;
        if (id == 0) {                              /* TRANSPORT_RESET: connections are gone */
            for (uint32_t i = 0; i < hi; i++) {
                if (conns[i].state == C_PENDING || conns[i].state == C_CLOSING)
                    conn_free(&conns[i]);
                else if (conns[i].state != C_FREE) {
                    conns[i].state = C_DEAD;
                    conns[i].pending = 0;
                    mark_event(&conns[i]);
                }
            }
            nraw = 0;
            read_cid();
            stats.transport_resets++;
        }
        post_event(cookie);
        events++;
    }
    if (events)
        virtq_kick(evq);
    /* sent packets count as work: send buffers emptied, so the app may go on writing */
    work += reap_tx() > 0;
    flush_all();
    return work + events;
}

int vsock_poll(uint64_t timeout)
{
    if (!dev)
        return -1;
    virtio_take_irq(dev);
    int work = process();
    if (work || !timeout)
        return work;
    uint64_t deadline = time_now() + timeout;
    while (!work && time_now() < deadline) {
        virtio_wait(dev, deadline);
        virtio_take_irq(dev);
        work = process();
    }
    return work;
}

/* ---- the socket API ---- */

int vsock_listen(uint32_t port)
{
    if (!dev || nlisten == MAX_LISTEN)
        return -1;
    listen_port[nlisten] = port;
    return (int)nlisten++;
}

int vsock_accept(int listener)
{
    struct conn *best = 0;
    if (!npending)
        return -1;
    for (uint32_t i = 0; i < hi; i++) {
        struct conn *c = &conns[i];
        if (c->state == C_PENDING && c->listener == listener && !(c->pending & P_RST) &&
            (!best || (int32_t)(c->seq - best->seq) < 0))
            best = c;
    }
    if (!best)
        return -1;
    best->state = C_OPEN;
    mark_event(best);
    npending--;
    return (int)(best - conns);
}

static struct conn *get(int id)
{
    if (id < 0 || (uint32_t)id >= nconns)
        return 0;
    struct conn *c = &conns[id];
    return c->state == C_OPEN || c->state == C_DEAD ? c : 0;
}

int vsock_recv(int id, void *buf, uint32_t n)
{
    struct conn *c = get(id);
    if (!c)
        return -1;
    if (!c->rx_len)
        return c->state == C_DEAD || (c->peer_shut & SHUT_SEND) ? -1 : 0;
    if (n > c->rx_len)
        n = c->rx_len;
    uint32_t first = bufsize - c->rx_head;
    if (first > n) first = n;
    memcpy(buf, c->rx + c->rx_head, first);
    memcpy((uint8_t *)buf + first, c->rx, n - first);
    c->rx_head = (c->rx_head + n) & (bufsize - 1);
    c->rx_len -= n;
    c->fwd_cnt += n;
    /* tell the peer about the room once a quarter of the buffer, or all of it, is free again */
    if (c->state == C_OPEN && (c->fwd_cnt - c->fwd_sent >= bufsize / 4 || (c->rx_len == 0 && c->fwd_cnt != c->fwd_sent))) {
        c->pending |= P_CREDIT;
        mark_work(c);
    }
    return (int)n;
}

int vsock_send(int id, const void *buf, uint32_t n)
{
    struct conn *c = get(id);
    if (!c || c->state == C_DEAD || (c->peer_shut & SHUT_RCV))
        return -1;
    uint32_t room = bufsize - c->tx_len;
    if (n > room)
        n = room;
    uint32_t tail = (c->tx_head + c->tx_len) & (bufsize - 1);
    uint32_t first = bufsize - tail;
    if (first > n) first = n;
    memcpy(c->tx + tail, buf, first);
    memcpy(c->tx, (const uint8_t *)buf + first, n - first);
    c->tx_len += n;
    if (n)
        mark_work(c);
    return (int)n;
}

void vsock_flush(void)
{
    if (dev)
        flush_all();
}

int vsock_close(int id)
{
    struct conn *c = get(id);
    if (!c)
        return -1;
    if (c->state == C_DEAD) {
        if (c->pending & P_RST)
            c->state = C_CLOSING;                   /* freed once the RST is out */
        else
            conn_free(c);
        flush_all();
        return 0;
    }
    if (c->peer_shut == (SHUT_RCV | SHUT_SEND)) {
        reset_conn(c);                              /* the peer already shut down: RST ends it */
        c->state = C_CLOSING;
    } else {
        c->state = C_CLOSING;                       /* send what is buffered, then SHUTDOWN */
        c->deadline = time_now() + DRAIN_TIMEOUT;
        mark_work(c);
    }
    flush_all();
    return 0;
}

uint32_t vsock_readable(int id)
{
    struct conn *c = get(id);
    return c ? c->rx_len : 0;
}

uint32_t vsock_writable(int id)
{
    struct conn *c = get(id);
    return c && c->state == C_OPEN && !(c->peer_shut & SHUT_RCV) ? bufsize - c->tx_len : 0;
}

int vsock_eof(int id)
{
    struct conn *c = get(id);
    return !c || c->state == C_DEAD || (c->peer_shut & SHUT_SEND);
}

uint32_t vsock_pending_tx(int id)
{
    struct conn *c = get(id);
    return c ? c->tx_len : 0;
}

uint32_t vsock_max_conns(void) { return nconns; }
uint32_t vsock_conn_limit(void) { return hi; }

int vsock_take_events(int id)
{
    if (id < 0 || (uint32_t)id >= nconns)
        return 0;
    uint32_t m = 1u << (id & 31), e = event_bits[id >> 5] & m;
    event_bits[id >> 5] &= ~m;
    return e != 0;
}

int vsock_next_event(int from)
{
    for (uint32_t i = from < 0 ? 0 : (uint32_t)from; i < hi; i = (i | 31) + 1) {
        uint32_t bits = event_bits[i >> 5] & (0xffffffffu << (i & 31));
        if (bits) {
            uint32_t id = (i & ~31u) + (uint32_t)__builtin_ctz(bits);
            if (id >= hi)
                return -1;
            event_bits[id >> 5] &= ~(1u << (id & 31));
            return (int)id;
        }
    }
    return -1;
}
