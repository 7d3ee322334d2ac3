/* The sleeve's common case in C, with the GIL released: weavenet.datapath._lane.
 *
 * The engine (engine.py) stays the authority: it decides where frames go (routes, MAC learning, relays,
 * broadcasts, oversize frames, path-MTU probes). This lane only repeats decisions the engine has made and
 * cached here for CACHE_TTL (cache_tx, cache_rx), and does the mechanical work of every datagram: reading
 * the TAP, building, sealing and cutting datagrams (UDP GSO), receiving them (recvmmsg, UDP GRO), checking
 * sender, source, replay window, putting fragments together, opening and parsing them, writing the TAP.
 * Whatever it is not sure of goes back to Python (``tx_pump``'s and ``rx_pump``'s "slow" items), unchanged
 * or, once authenticated, as the opened body. Nothing from the network is trusted: every length is checked
 * before use and every table is bounded (links: the engine's; caches: fixed size; reassembly: REASM_SLOTS
 * per link).
 *
 * Threads: the TAP thread calls tx_pump and cache_tx, the UDP thread rx_pump and cache_rx; send() may come
 * from either (serialised by a mutex); set_links/flush from any. Each side's state is owned by its thread,
 * the set of links is an immutable object swapped under the GIL, counters shared by two threads are atomic.
 * The wire format and its limits are sleeve.py's; tests check that the constants exported here match.
 */
#define PY_SSIZE_T_CLEAN
/* The stable ABI of 3.11: one build (cp311-abi3) serves every later CPython, so the collection can ship it to
 * hosts whose Python is newer than the controller's. */
#ifndef Py_LIMITED_API
#define Py_LIMITED_API 0x030B0000
#endif
#include <Python.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define HS 16                 /* clear header: magic, flags, sender (6), seq (8) */
#define BODY_HEAD 13          /* origin (6), dest (6), body flags */
#define FRAG_HEAD 2           /* index, count */
#define MAGIC 0x57
#define F_ENCRYPTED 0x01
#define F_FRAG 0x02
#define F_PROBE 0x04
#define F_AEGIS 0x08
#define KNOWN_FLAGS 0x0f
#define B_RELAY_ONLY 0x01
#define TAG 16
#define AEGIS_TAG 32
#define MAX_DATAGRAM 65507
#define MAX_FRAGS 255
#define UDP_IP 28
#define BATCH_FRAMES 64
#define BATCH_BYTES 60000
#define TAP_READ 65600
#define RX_BATCH 64
#define RX_BUF 65536
#define REASM_SLOTS 8
#define REASM_TIMEOUT 2.0
#define REPLAY_BITS 4096
#define CACHE_SLOTS 4096      /* power of two */
/* A cached decision is the engine's for this long, then it is asked again (which also keeps its MAC table,
 * 300 s, fresh). 1 s sent every fifth ping of a 0.2 s ping through Python: +0.35-0.40 ms against +0.25-0.36. */
#define CACHE_TTL 10.0
#define GSO_SEGMENTS 64
#define SEND_TIMEOUT_MS 100
#define SOL_UDP_ 17
#define UDP_SEGMENT_ 103
#define UDP_GRO_ 104

enum { D_MALFORMED, D_AUTH, D_REPLAY, D_WRONG_SOURCE, D_RUNT, D_TAP_WRITE, D_SEND_ERROR, D_TOO_BIG, D_GSO_OFF,
       D_N };
static const char *DROP_NAMES[D_N] = {"malformed", "auth", "replay", "wrong_source", "runt", "tap_write",
                                      "send_error", "too_big", "gso_off"};

typedef int (*aead_seal)(unsigned char *, unsigned long long *, const unsigned char *, unsigned long long,
                         const unsigned char *, unsigned long long, const unsigned char *, const unsigned char *,
                         const unsigned char *);
typedef int (*aead_open)(unsigned char *, unsigned long long *, unsigned char *, const unsigned char *,
                         unsigned long long, const unsigned char *, unsigned long long, const unsigned char *,
                         const unsigned char *);

static void free_instance(PyObject *self) {   /* instances of heap types hold their type */
    PyTypeObject *tp = Py_TYPE(self);
    freefunc f = (freefunc)PyType_GetSlot(tp, Py_tp_free);
    f(self);
    Py_DECREF(tp);
}

static PyTypeObject *LinkType, *LinkSetType, *LaneType;   /* made from their specs at import */

static double now_mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void put_be64(uint8_t *p, uint64_t v) {
    for (int i = 7; i >= 0; i--) { p[i] = (uint8_t)v; v >>= 8; }
}

static size_t be32(const uint8_t *p) {
    return ((size_t)p[0] << 24) | ((size_t)p[1] << 16) | ((size_t)p[2] << 8) | p[3];
}

static uint64_t get_be64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
    return v;
}

/* ---------------------------------------------------------------------------------------------------- */
/* Link: the sleeve to one directly connected peer (engine.PeerLink's C half)                            */

typedef struct {
    int used, count, chunk, last_len;
    uint64_t seq;
    double started;
    uint64_t have[4];
    int nhave;
    size_t size;
    uint8_t *buf;             /* HS + body: fragment i's payload at HS + i * chunk */
    uint8_t *last;            /* the last fragment's payload while chunk is not known yet */
} Reasm;

typedef struct {
    PyObject_HEAD
    uint8_t name[6];
    struct sockaddr_in addr;
    int keyed, aegis;
    uint8_t tx_key[32], rx_key[32];
    uint64_t seq;                              /* next sequence number (atomic: both threads send) */
    int pmtu;                                  /* set by the engine (the prober's) */
    int too_big;                               /* a send failed with EMSGSIZE: for the prober */
    int replay_any;                            /* UDP thread: replay window and reassembly */
    uint64_t replay_top, replay_bits[REPLAY_BITS / 64];
    Reasm reasm[REASM_SLOTS];
    uint64_t evicted, tx_frames, tx_bytes, rx_frames, rx_bytes;   /* atomic */
} Link;

static void reasm_free(Reasm *r) {
    free(r->buf);
    free(r->last);
    memset(r, 0, sizeof *r);
}

static void Link_dealloc(Link *self) {
    for (int i = 0; i < REASM_SLOTS; i++) reasm_free(&self->reasm[i]);
    free_instance((PyObject *)self);
}

static int get_key(PyObject *o, uint8_t *out, int *have) {
    if (o == Py_None) return 0;
    Py_buffer b;
    if (PyObject_GetBuffer(o, &b, PyBUF_SIMPLE) < 0) return -1;
    if (b.len != 32) {
        PyBuffer_Release(&b);
        PyErr_SetString(PyExc_ValueError, "keys are 32 bytes");
        return -1;
    }
    memcpy(out, b.buf, 32);
    PyBuffer_Release(&b);
    *have = 1;
    return 0;
}

static int Link_init(Link *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"name", "ip", "port", "tx_key", "rx_key", "aegis", "pmtu", NULL};
    Py_buffer name;
    const char *ip;
    int port, aegis, pmtu, have_tx = 0, have_rx = 0;
    PyObject *tx, *rx;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "y*siOOpi", kwlist, &name, &ip, &port, &tx, &rx, &aegis, &pmtu))
        return -1;
    if (name.len != 6) {
        PyBuffer_Release(&name);
        PyErr_SetString(PyExc_ValueError, "a peer name is 6 bytes");
        return -1;
    }
    memcpy(self->name, name.buf, 6);
    PyBuffer_Release(&name);
    memset(&self->addr, 0, sizeof self->addr);
    self->addr.sin_family = AF_INET;
    self->addr.sin_port = htons((uint16_t)port);
    if (port <= 0 || port > 65535 || inet_pton(AF_INET, ip, &self->addr.sin_addr) != 1) {
        PyErr_SetString(PyExc_ValueError, "the lane carries IPv4 peers only");
        return -1;
    }
    if (get_key(tx, self->tx_key, &have_tx) < 0 || get_key(rx, self->rx_key, &have_rx) < 0) return -1;
    if (have_tx != have_rx) {
        PyErr_SetString(PyExc_ValueError, "both keys or none");
        return -1;
    }
    self->keyed = have_tx;
    self->aegis = aegis && have_tx;
    self->pmtu = pmtu;
    return 0;
}

static PyObject *Link_get_pmtu(Link *self, void *c) {
    return PyLong_FromLong(__atomic_load_n(&self->pmtu, __ATOMIC_RELAXED));
}

static int Link_set_pmtu(Link *self, PyObject *v, void *c) {
    long p = v ? PyLong_AsLong(v) : -1;
    if (p == -1 && PyErr_Occurred()) return -1;
    if (p < HS + FRAG_HEAD + 1 + UDP_IP || p > 65535) {
        PyErr_SetString(PyExc_ValueError, "pmtu out of range");
        return -1;
    }
    __atomic_store_n(&self->pmtu, (int)p, __ATOMIC_RELAXED);
    return 0;
}

static PyObject *Link_take_too_big(Link *self, PyObject *unused) {
    return PyBool_FromLong(__atomic_exchange_n(&self->too_big, 0, __ATOMIC_RELAXED));
}

static PyObject *Link_counters(Link *self, PyObject *unused) {
    return Py_BuildValue("{sKsKsKsKsK}", "tx_frames", __atomic_load_n(&self->tx_frames, __ATOMIC_RELAXED),
                         "tx_bytes", __atomic_load_n(&self->tx_bytes, __ATOMIC_RELAXED),
                         "rx_frames", __atomic_load_n(&self->rx_frames, __ATOMIC_RELAXED),
                         "rx_bytes", __atomic_load_n(&self->rx_bytes, __ATOMIC_RELAXED),
                         "evicted", __atomic_load_n(&self->evicted, __ATOMIC_RELAXED));
}

static PyGetSetDef Link_getset[] = {
    {"pmtu", (getter)Link_get_pmtu, (setter)Link_set_pmtu, "path MTU the datagrams are cut to", NULL},
    {NULL}};

static PyMethodDef Link_methods[] = {
    {"take_too_big", (PyCFunction)Link_take_too_big, METH_NOARGS, "did a send fail with EMSGSIZE (and clear)"},
    {"counters", (PyCFunction)Link_counters, METH_NOARGS, "frames and bytes each way, reassemblies evicted"},
    {NULL}};

static PyType_Slot Link_slots[] = {
    {Py_tp_dealloc, Link_dealloc}, {Py_tp_doc, "The C half of one peer's sleeve link."},
    {Py_tp_methods, Link_methods}, {Py_tp_getset, Link_getset}, {Py_tp_init, Link_init},
    {Py_tp_new, PyType_GenericNew}, {0, NULL}};
static PyType_Spec Link_spec = {"weavenet.datapath._lane.Link", sizeof(Link), 0, Py_TPFLAGS_DEFAULT, Link_slots};

/* Replay window (replay.py's, as a ring of bits indexed by seq mod REPLAY_BITS) */
static int replay_check(Link *lk, uint64_t seq) {
    if (!lk->replay_any || seq > lk->replay_top) return 1;
    uint64_t off = lk->replay_top - seq;
    if (off >= REPLAY_BITS) return 0;
    uint64_t i = seq % REPLAY_BITS;
    return !((lk->replay_bits[i / 64] >> (i % 64)) & 1);
}

static void replay_accept(Link *lk, uint64_t seq) {
    if (!lk->replay_any || seq > lk->replay_top) {
        uint64_t gap = lk->replay_any ? seq - lk->replay_top : REPLAY_BITS;
        if (gap >= REPLAY_BITS) {
            memset(lk->replay_bits, 0, sizeof lk->replay_bits);
        } else {
            for (uint64_t s = lk->replay_top + 1; s != seq + 1; s++) {
                uint64_t i = s % REPLAY_BITS;
                lk->replay_bits[i / 64] &= ~(1ULL << (i % 64));
            }
        }
        lk->replay_top = seq;
        lk->replay_any = 1;
    }
    uint64_t i = seq % REPLAY_BITS;
    lk->replay_bits[i / 64] |= 1ULL << (i % 64);
}

/* ---------------------------------------------------------------------------------------------------- */
/* LinkSet: an immutable set of links with a lookup by peer name (swapped whole by set_links)            */

typedef struct {
    PyObject_HEAD
    PyObject *links;          /* tuple of Link */
    int mask;
    Link **table;             /* open addressing on the name */
} LinkSet;

static void LinkSet_dealloc(LinkSet *self) {
    Py_XDECREF((PyObject *)self->links);
    free(self->table);
    free_instance((PyObject *)self);
}

static PyType_Slot LinkSet_slots[] = {{Py_tp_dealloc, LinkSet_dealloc}, {0, NULL}};
static PyType_Spec LinkSet_spec = {"weavenet.datapath._lane.LinkSet", sizeof(LinkSet), 0,
                                   Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION, LinkSet_slots};

static uint32_t name_hash(const uint8_t *n) {
    uint32_t h = 2166136261u;
    for (int i = 0; i < 6; i++) h = (h ^ n[i]) * 16777619u;
    return h;
}

static Link *linkset_find(LinkSet *s, const uint8_t *name) {
    if (!s->table) return NULL;
    for (uint32_t i = name_hash(name) & s->mask;; i = (i + 1) & s->mask) {
        Link *lk = s->table[i];
        if (!lk) return NULL;
        if (!memcmp(lk->name, name, 6)) return lk;
    }
}

static LinkSet *linkset_new(PyObject *seq) {
    PyObject *links = PySequence_Tuple(seq);
    if (!links) return NULL;
    Py_ssize_t n = PyTuple_Size(links);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyObject_TypeCheck(PyTuple_GetItem(links, i), LinkType)) {
            Py_DECREF(links);
            PyErr_SetString(PyExc_TypeError, "links must be _lane.Link objects");
            return NULL;
        }
    }
    LinkSet *s = PyObject_New(LinkSet, LinkSetType);
    if (!s) {
        Py_DECREF(links);
        return NULL;
    }
    s->links = links;
    int size = 8;
    while (size < 2 * n) size *= 2;
    s->mask = size - 1;
    s->table = calloc(size, sizeof(Link *));
    if (!s->table) {
        Py_DECREF((PyObject *)s);
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        Link *lk = (Link *)PyTuple_GetItem(links, k);
        uint32_t i = name_hash(lk->name) & s->mask;
        while (s->table[i] && memcmp(s->table[i]->name, lk->name, 6)) i = (i + 1) & s->mask;
        s->table[i] = lk;     /* a name twice: the later link */
    }
    return s;
}

static int linkset_has(LinkSet *s, Link *lk) { return linkset_find(s, lk->name) == lk; }

/* ---------------------------------------------------------------------------------------------------- */
/* Lane                                                                                                   */

typedef struct {
    uint64_t gen;
    double expires;
    uint8_t src[6], dst[6], dest[6];
    Link *link;               /* borrowed: valid while gen is current (the LinkSet of that gen holds it) */
} TxEntry;

typedef struct {
    uint64_t gen;
    double expires;
    uint8_t mac[6];
    Link *link;
} RxEntry;

typedef struct {              /* what one send needs, per thread */
    uint8_t *pt;              /* the body before sealing */
    uint8_t *dg;              /* the datagram */
    uint8_t heads[MAX_FRAGS][HS + FRAG_HEAD];
    struct iovec iov[2 * GSO_SEGMENTS];
} Scratch;

typedef struct {
    Link *link;
    uint8_t dest[6];
    int n, bytes;
    struct iovec frames[BATCH_FRAMES];
} Group;

typedef struct {
    PyObject_HEAD
    int tap_fd, sock_fd, halt_fd, wake_fd, off, gso;
    Py_ssize_t max_frame;
    uint8_t our[6];
    aead_seal chacha_seal, aegis_seal;
    aead_open chacha_open, aegis_open;
    LinkSet *links;
    uint64_t gen;             /* atomic: bumped by set_links and flush: every cached decision is void */
    TxEntry *tx_cache;        /* TAP thread */
    RxEntry *rx_cache;        /* UDP thread */
    uint8_t *tap_bufs;        /* TAP thread: BATCH_FRAMES reads */
    Scratch tx_scratch;       /* TAP thread (tx_pump) */
    Scratch send_scratch;     /* send(), under send_mu */
    pthread_mutex_t send_mu;
    uint8_t *rx_bufs, *rx_pt; /* UDP thread */
    struct mmsghdr rx_msgs[RX_BATCH];
    struct iovec rx_iov[RX_BATCH];
    struct sockaddr_in rx_addr[RX_BATCH];
    union { struct cmsghdr align; char buf[CMSG_SPACE(sizeof(int))]; } rx_ctl[RX_BATCH];
    uint64_t drops[D_N];      /* atomic */
    uint64_t fast_tx, fast_rx;
} Lane;

static void cnt(uint64_t *c, uint64_t n) { __atomic_fetch_add(c, n, __ATOMIC_RELAXED); }

static int scratch_init(Scratch *s) {
    s->pt = malloc(MAX_DATAGRAM + 256);
    s->dg = malloc(MAX_DATAGRAM + 256);
    return s->pt && s->dg ? 0 : -1;
}

static void Lane_dealloc(Lane *self) {
    Py_XDECREF((PyObject *)self->links);
    free(self->tx_cache);
    free(self->rx_cache);
    free(self->tap_bufs);
    free(self->tx_scratch.pt);
    free(self->tx_scratch.dg);
    free(self->send_scratch.pt);
    free(self->send_scratch.dg);
    free(self->rx_bufs);
    free(self->rx_pt);
    pthread_mutex_destroy(&self->send_mu);
    free_instance((PyObject *)self);
}

static int Lane_init(Lane *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"tap_fd", "sock_fd", "halt_fd", "wake_fd", "off", "ourself", "max_frame",
                             "chacha_seal", "chacha_open", "aegis_seal", "aegis_open", NULL};
    Py_buffer our;
    unsigned long long cs, co, as, ao;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "iiiiiy*nKKKK", kwlist, &self->tap_fd, &self->sock_fd,
                                     &self->halt_fd, &self->wake_fd, &self->off, &our, &self->max_frame, &cs,
                                     &co, &as, &ao))
        return -1;
    if (our.len != 6 || (self->off != 0 && self->off != 10) || !cs || !co) {
        PyBuffer_Release(&our);
        PyErr_SetString(PyExc_ValueError, "bad lane parameters");
        return -1;
    }
    memcpy(self->our, our.buf, 6);
    PyBuffer_Release(&our);
    self->chacha_seal = (aead_seal)(uintptr_t)cs;
    self->chacha_open = (aead_open)(uintptr_t)co;
    self->aegis_seal = (aead_seal)(uintptr_t)as;
    self->aegis_open = (aead_open)(uintptr_t)ao;
    self->gso = 1;
    self->gen = 1;
    pthread_mutex_init(&self->send_mu, NULL);
    PyObject *none = PyTuple_New(0);
    self->links = none ? linkset_new(none) : NULL;
    Py_XDECREF(none);
    self->tx_cache = calloc(CACHE_SLOTS, sizeof(TxEntry));
    self->rx_cache = calloc(CACHE_SLOTS, sizeof(RxEntry));
    self->tap_bufs = malloc((size_t)BATCH_FRAMES * TAP_READ);
    self->rx_bufs = malloc((size_t)RX_BATCH * RX_BUF);
    self->rx_pt = malloc(RX_BUF + 256);
    if (!self->links || !self->tx_cache || !self->rx_cache || !self->tap_bufs || !self->rx_bufs || !self->rx_pt ||
        scratch_init(&self->tx_scratch) < 0 || scratch_init(&self->send_scratch) < 0) {
        if (!PyErr_Occurred()) PyErr_NoMemory();
        return -1;
    }
    for (int i = 0; i < RX_BATCH; i++) {
        self->rx_iov[i].iov_base = self->rx_bufs + (size_t)i * RX_BUF;
        self->rx_iov[i].iov_len = RX_BUF;
    }
    return 0;
}

static PyObject *Lane_set_links(Lane *self, PyObject *seq) {
    LinkSet *s = linkset_new(seq);
    if (!s) return NULL;
    LinkSet *old = self->links;
    __atomic_store_n(&self->links, s, __ATOMIC_RELEASE);
    __atomic_fetch_add(&self->gen, 1, __ATOMIC_RELEASE);
    Py_XDECREF((PyObject *)old);
    Py_RETURN_NONE;
}

static PyObject *Lane_flush(Lane *self, PyObject *unused) {
    __atomic_fetch_add(&self->gen, 1, __ATOMIC_RELEASE);
    Py_RETURN_NONE;
}

static uint32_t mac_hash(const uint8_t *a, const uint8_t *b) {
    uint32_t h = 2166136261u;
    for (int i = 0; i < 6; i++) h = (h ^ a[i]) * 16777619u;
    if (b)
        for (int i = 0; i < 6; i++) h = (h ^ b[i]) * 16777619u;
    return h & (CACHE_SLOTS - 1);
}

static int six(Py_buffer *b, PyObject *o) {
    if (PyObject_GetBuffer(o, b, PyBUF_SIMPLE) < 0) return -1;
    if (b->len != 6) {
        PyBuffer_Release(b);
        PyErr_SetString(PyExc_ValueError, "6 bytes expected");
        return -1;
    }
    return 0;
}

/* cache_tx(src_mac, dst_mac, link, dest_peer): frames src -> dst go to that link, for that peer (the
 * engine's from_local said so), for CACHE_TTL. Only a link of the current set is taken. */
static PyObject *Lane_cache_tx(Lane *self, PyObject *args) {
    PyObject *so, *dso, *lo, *po;
    if (!PyArg_ParseTuple(args, "OOO!O", &so, &dso, LinkType, &lo, &po)) return NULL;
    Py_buffer s, d, p;
    if (six(&s, so) < 0) return NULL;
    if (six(&d, dso) < 0) { PyBuffer_Release(&s); return NULL; }
    if (six(&p, po) < 0) { PyBuffer_Release(&s); PyBuffer_Release(&d); return NULL; }
    Link *lk = (Link *)lo;
    if (linkset_has(self->links, lk)) {
        TxEntry *e = &self->tx_cache[mac_hash(s.buf, d.buf)];
        memcpy(e->src, s.buf, 6);
        memcpy(e->dst, d.buf, 6);
        memcpy(e->dest, p.buf, 6);
        e->link = lk;
        e->expires = now_mono() + CACHE_TTL;
        e->gen = __atomic_load_n(&self->gen, __ATOMIC_ACQUIRE);
    }
    PyBuffer_Release(&s);
    PyBuffer_Release(&d);
    PyBuffer_Release(&p);
    Py_RETURN_NONE;
}

/* cache_rx(src_mac, link): frames from src_mac that link's peer sends us itself may go straight to the TAP
 * (the engine learned the MAC there and would deliver them), for CACHE_TTL. */
static PyObject *Lane_cache_rx(Lane *self, PyObject *args) {
    PyObject *so, *lo;
    if (!PyArg_ParseTuple(args, "OO!", &so, LinkType, &lo)) return NULL;
    Py_buffer s;
    if (six(&s, so) < 0) return NULL;
    Link *lk = (Link *)lo;
    if (linkset_has(self->links, lk)) {
        RxEntry *e = &self->rx_cache[mac_hash(s.buf, NULL)];
        memcpy(e->mac, s.buf, 6);
        e->link = lk;
        e->expires = now_mono() + CACHE_TTL;
        e->gen = __atomic_load_n(&self->gen, __ATOMIC_ACQUIRE);
    }
    PyBuffer_Release(&s);
    Py_RETURN_NONE;
}

/* --- sending ------------------------------------------------------------------------------------------ */

static int wait_writable(int fd) {
    struct pollfd p = {fd, POLLOUT, 0};
    return poll(&p, 1, SEND_TIMEOUT_MS) > 0;
}

static ssize_t sendmsg_retry(int fd, struct msghdr *m) {
    ssize_t r = sendmsg(fd, m, 0);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        if (!wait_writable(fd)) {
            errno = ETIMEDOUT;
            return -1;
        }
        r = sendmsg(fd, m, 0);
    }
    return r;
}

static int gso_unsupported(int e) { return e == EIO || e == EINVAL || e == ENOPROTOOPT || e == EOPNOTSUPP; }

static void poke(Lane *L) {
    uint64_t one = 1;
    ssize_t r = write(L->wake_fd, &one, sizeof one);
    (void)r;
}

/* Put a datagram of dlen bytes (s->dg) on the wire to lk, cut into fragments above its path MTU. 0 or errno. */
static int put_datagram(Lane *L, Scratch *s, Link *lk, size_t dlen) {
    size_t size = (size_t)__atomic_load_n(&lk->pmtu, __ATOMIC_RELAXED) - UDP_IP;
    struct msghdr m = {0};
    m.msg_name = &lk->addr;
    m.msg_namelen = sizeof lk->addr;
    if (dlen <= size) {
        s->iov[0].iov_base = s->dg;
        s->iov[0].iov_len = dlen;
        m.msg_iov = s->iov;
        m.msg_iovlen = 1;
        return sendmsg_retry(L->sock_fd, &m) < 0 ? errno : 0;
    }
    size_t chunk = size - HS - FRAG_HEAD;
    size_t count = (dlen - HS + chunk - 1) / chunk;
    if (count > MAX_FRAGS) return EMSGSIZE;   /* cannot happen above pmtu.FLOOR; counted as too big */
    for (size_t i = 0; i < count; i++) {
        memcpy(s->heads[i], s->dg, HS);
        s->heads[i][1] |= F_FRAG;
        s->heads[i][HS] = (uint8_t)i;
        s->heads[i][HS + 1] = (uint8_t)count;
    }
    union { struct cmsghdr align; char buf[CMSG_SPACE(sizeof(uint16_t))]; } ctl;
    size_t i = 0;
    while (i < count) {
        int gso = __atomic_load_n(&L->gso, __ATOMIC_RELAXED);
        size_t per = gso ? (MAX_DATAGRAM / size < GSO_SEGMENTS ? MAX_DATAGRAM / size : GSO_SEGMENTS) : 1;
        size_t n = count - i < per ? count - i : per;
        for (size_t j = 0; j < n; j++) {
            size_t at = HS + (i + j) * chunk, len = dlen - at < chunk ? dlen - at : chunk;
            s->iov[2 * j].iov_base = s->heads[i + j];
            s->iov[2 * j].iov_len = HS + FRAG_HEAD;
            s->iov[2 * j + 1].iov_base = s->dg + at;
            s->iov[2 * j + 1].iov_len = len;
        }
        m.msg_iov = s->iov;
        m.msg_iovlen = 2 * n;
        m.msg_control = NULL;
        m.msg_controllen = 0;
        if (n > 1) {
            memset(ctl.buf, 0, sizeof ctl.buf);
            m.msg_control = ctl.buf;
            m.msg_controllen = sizeof ctl.buf;
            struct cmsghdr *c = CMSG_FIRSTHDR(&m);
            c->cmsg_level = SOL_UDP_;
            c->cmsg_type = UDP_SEGMENT_;
            c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
            uint16_t seg = (uint16_t)size;
            memcpy(CMSG_DATA(c), &seg, sizeof seg);
        }
        if (sendmsg_retry(L->sock_fd, &m) < 0) {
            if (n > 1 && gso_unsupported(errno)) {   /* e.g. no checksum offload: one datagram per call */
                __atomic_store_n(&L->gso, 0, __ATOMIC_RELAXED);
                cnt(&L->drops[D_GSO_OFF], 1);
                continue;
            }
            return errno;
        }
        i += n;
    }
    return 0;
}

/* Build, seal and send one datagram of n frames (each with its virtio-net header, if any). */
static void send_frames(Lane *L, Scratch *s, Link *lk, const uint8_t *origin, const uint8_t *dest, int relay_only,
                        struct iovec *frames, int n) {
    size_t body = BODY_HEAD;
    for (int i = 0; i < n; i++) body += 4 + frames[i].iov_len;
    size_t tag = lk->keyed ? (lk->aegis ? AEGIS_TAG : TAG) : 0;
    if (HS + body + tag > MAX_DATAGRAM) {
        if (n > 1) {    /* split the batch; a single frame this big cannot be carried */
            send_frames(L, s, lk, origin, dest, relay_only, frames, n / 2);
            send_frames(L, s, lk, origin, dest, relay_only, frames + n / 2, n - n / 2);
        } else {
            cnt(&L->drops[D_TOO_BIG], 1);
        }
        return;
    }
    uint64_t seq = __atomic_fetch_add(&lk->seq, 1, __ATOMIC_RELAXED);
    uint8_t *h = s->dg;
    h[0] = MAGIC;
    h[1] = lk->keyed ? (uint8_t)(F_ENCRYPTED | (lk->aegis ? F_AEGIS : 0)) : 0;
    memcpy(h + 2, L->our, 6);
    put_be64(h + 8, seq);
    uint8_t *p = lk->keyed ? s->pt : s->dg + HS;
    memcpy(p, origin, 6);
    memcpy(p + 6, dest, 6);
    p[12] = relay_only ? B_RELAY_ONLY : 0;
    size_t at = BODY_HEAD;
    for (int i = 0; i < n; i++) {
        uint32_t len = (uint32_t)frames[i].iov_len;
        p[at] = (uint8_t)(len >> 24); p[at + 1] = (uint8_t)(len >> 16); p[at + 2] = (uint8_t)(len >> 8);
        p[at + 3] = (uint8_t)len;
        memcpy(p + at + 4, frames[i].iov_base, len);
        at += 4 + len;
    }
    size_t dlen = HS + body;
    if (lk->keyed) {
        unsigned long long clen = 0;
        uint8_t nonce[32] = {0};
        int r;
        if (lk->aegis) {
            put_be64(nonce + 24, seq);
            r = L->aegis_seal(s->dg + HS, &clen, s->pt, body, h, HS, NULL, nonce, lk->tx_key);
        } else {
            put_be64(nonce + 4, seq);
            r = L->chacha_seal(s->dg + HS, &clen, s->pt, body, h, HS, NULL, nonce, lk->tx_key);
        }
        if (r != 0) {
            cnt(&L->drops[D_SEND_ERROR], n);
            return;
        }
        dlen = HS + clen;
    }
    int err = put_datagram(L, s, lk, dlen);
    if (err) {
        if (err == EMSGSIZE) {   /* the route's MTU shrank below our path MTU: the prober re-checks */
            __atomic_store_n(&lk->too_big, 1, __ATOMIC_RELAXED);
            poke(L);
        }
        cnt(&L->drops[D_SEND_ERROR], n);
        return;
    }
    cnt(&lk->tx_frames, n);
    cnt(&lk->tx_bytes, dlen);
}

/* send(link, origin, dest, frames, relay_only): the engine's own sends (slow path, relays, broadcasts). */
static PyObject *Lane_send(Lane *self, PyObject *args) {
    PyObject *lo, *oo, *dso, *fl;
    int relay_only;
    if (!PyArg_ParseTuple(args, "O!OOOp", LinkType, &lo, &oo, &dso, &fl, &relay_only)) return NULL;
    Py_buffer o, d;
    if (six(&o, oo) < 0) return NULL;
    if (six(&d, dso) < 0) { PyBuffer_Release(&o); return NULL; }
    PyObject *seq = PySequence_Tuple(fl);
    if (!seq) { PyBuffer_Release(&o); PyBuffer_Release(&d); return NULL; }
    Py_ssize_t n = PyTuple_Size(seq);
    Py_buffer *bufs = PyMem_Calloc(n ? n : 1, sizeof(Py_buffer));
    struct iovec *iov = PyMem_Calloc(n ? n : 1, sizeof(struct iovec));
    Py_ssize_t got = 0;
    PyObject *ret = NULL;
    if (!bufs || !iov) { PyErr_NoMemory(); goto done; }
    for (; got < n; got++) {
        if (PyObject_GetBuffer(PyTuple_GetItem(seq, got), &bufs[got], PyBUF_SIMPLE) < 0) goto done;
        iov[got].iov_base = bufs[got].buf;
        iov[got].iov_len = bufs[got].len;
    }
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&self->send_mu);
    for (Py_ssize_t i = 0; i < n; i += BATCH_FRAMES)
        send_frames(self, &self->send_scratch, (Link *)lo, o.buf, d.buf, relay_only, iov + i,
                    (int)(n - i < BATCH_FRAMES ? n - i : BATCH_FRAMES));
    pthread_mutex_unlock(&self->send_mu);
    Py_END_ALLOW_THREADS
    ret = Py_NewRef(Py_None);
done:
    for (Py_ssize_t i = 0; i < got; i++) PyBuffer_Release(&bufs[i]);
    PyMem_Free(bufs);
    PyMem_Free(iov);
    Py_DECREF(seq);
    PyBuffer_Release(&o);
    PyBuffer_Release(&d);
    return ret;
}

/* The links and the decisions' generation as they are now, taken after the wait (a pump may have slept for
 * a second, through a publish): a new LinkSet is taken with the GIL, which only a publish costs. */
static uint64_t current(Lane *L, LinkSet **set, PyThreadState **ts) {
    if (__atomic_load_n(&L->links, __ATOMIC_ACQUIRE) != *set) {
        PyEval_RestoreThread(*ts);
        Py_DECREF((PyObject *)*set);
        *set = L->links;
        Py_INCREF((PyObject *)*set);
        *ts = PyEval_SaveThread();
    }
    return __atomic_load_n(&L->gen, __ATOMIC_ACQUIRE);
}

/* --- TAP -> peers -------------------------------------------------------------------------------------- */

static void flush_group(Lane *L, Group *g) {
    if (g->n) send_frames(L, &L->tx_scratch, g->link, L->our, g->dest, 0, g->frames, g->n);
    g->n = 0;
    g->bytes = 0;
}

/* A frame above the overlay MTU may still go: a TSO super-frame whose segments fit it (icmp.gso_segment's
 * rule, for IPv4 and IPv6 TCP). Anything else above it is the engine's (ICMP "fragmentation needed", IP
 * fragments). */
static int fits(Lane *L, const uint8_t *f, ssize_t r) {
    if (r <= L->max_frame) return 1;
    if (!L->off || !f[1]) return 0;
    const uint8_t *e = f + L->off;
    ssize_t n = r - L->off, ip_len;
    if (n < 14 + 40) return 0;
    if (e[12] == 0x08 && e[13] == 0x00 && (e[14] >> 4) == 4) ip_len = (e[14] & 15) * 4;
    else if (e[12] == 0x86 && e[13] == 0xdd && (e[14] >> 4) == 6 && e[20] == 6) ip_len = 40;
    else return 0;
    ssize_t tcp = 14 + ip_len + 12;
    if (ip_len < 20 || n <= tcp) return 0;
    ssize_t seg = ip_len + (e[tcp] >> 4) * 4 + (f[4] | (f[5] << 8));
    return seg <= L->max_frame - L->off - 14;
}

/* tx_pump(timeout_ms): wait for the TAP (or the halt), read up to BATCH_FRAMES frames, send those the
 * engine's cached decisions cover and return the others (a list of bytes, for the engine). None: the TAP
 * is closed. A read error with nothing read raises OSError. */
static PyObject *Lane_tx_pump(Lane *self, PyObject *arg) {
    int timeout = (int)PyLong_AsLong(arg);
    if (timeout == -1 && PyErr_Occurred()) return NULL;
    LinkSet *set = self->links;
    Py_INCREF((PyObject *)set);
    uint64_t gen = 0;
    int nread = 0, eof = 0, err = 0, nslow = 0;
    uint16_t slow[BATCH_FRAMES];
    ssize_t lens[BATCH_FRAMES];
    Group groups[8];
    int ngroups = 0;
    PyThreadState *ts = PyEval_SaveThread();
    struct pollfd pf[2] = {{self->tap_fd, POLLIN, 0}, {self->halt_fd, POLLIN, 0}};
    if (poll(pf, 2, timeout) > 0 && !(pf[1].revents & POLLIN) && pf[0].revents) {
        gen = current(self, &set, &ts);
        double now = now_mono();
        for (; nread < BATCH_FRAMES; nread++) {
            uint8_t *f = self->tap_bufs + (size_t)nread * TAP_READ;
            ssize_t r = read(self->tap_fd, f, TAP_READ);
            if (r < 0) {
                if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) err = errno;
                break;
            }
            if (r == 0) {
                eof = 1;
                break;
            }
            lens[nread] = r;
            int off = self->off;
            if (r < off + 14) {
                cnt(&self->drops[D_RUNT], 1);
                continue;
            }
            const uint8_t *dst = f + off, *src = f + off + 6;
            TxEntry *e = &self->tx_cache[mac_hash(src, dst)];
            if ((dst[0] & 1) || !fits(self, f, r) || e->gen != gen || e->expires < now ||
                memcmp(e->src, src, 6) || memcmp(e->dst, dst, 6)) {
                slow[nslow++] = (uint16_t)nread;
                continue;
            }
            Group *g = NULL;
            for (int k = 0; k < ngroups; k++)
                if (groups[k].link == e->link && !memcmp(groups[k].dest, e->dest, 6)) g = &groups[k];
            if (!g) {
                if (ngroups == 8) {   /* more destinations in one batch than groups: send the oldest now */
                    flush_group(self, &groups[0]);
                    memmove(groups, groups + 1, 7 * sizeof(Group));
                    ngroups--;
                }
                g = &groups[ngroups++];
                g->link = e->link;
                memcpy(g->dest, e->dest, 6);
                g->n = g->bytes = 0;
            }
            if (g->n && g->bytes + r + 4 > BATCH_BYTES) flush_group(self, g);
            g->frames[g->n].iov_base = f;
            g->frames[g->n].iov_len = (size_t)r;
            g->n++;
            g->bytes += (int)r + 4;
            self->fast_tx++;
        }
        for (int k = 0; k < ngroups; k++) flush_group(self, &groups[k]);
    }
    PyEval_RestoreThread(ts);
    Py_DECREF((PyObject *)set);
    if (eof && !nslow) Py_RETURN_NONE;
    if (err && !nread) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyObject *out = PyList_New(nslow);
    if (!out) return NULL;
    for (int k = 0; k < nslow; k++) {
        PyObject *b = PyBytes_FromStringAndSize((char *)self->tap_bufs + (size_t)slow[k] * TAP_READ, lens[slow[k]]);
        if (!b) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SetItem(out, k, b);
    }
    return out;
}

/* --- peers -> TAP -------------------------------------------------------------------------------------- */

/* A fragment (F_FRAG) into its link's reassembly: the whole datagram (in the slot's buffer, F_FRAG cleared)
 * once complete, with *slot_out set for the caller to free after use; NULL otherwise. -1 in *bad: malformed. */
static uint8_t *reasm_add(Link *lk, const uint8_t *p, size_t n, uint64_t seq, double now, size_t *out_len,
                          Reasm **slot_out, int *bad) {
    *bad = 0;
    if (n < HS + FRAG_HEAD) { *bad = 1; return NULL; }
    int index = p[HS], count = p[HS + 1];
    if (count < 2 || index >= count) { *bad = 1; return NULL; }
    const uint8_t *pay = p + HS + FRAG_HEAD;
    size_t plen = n - HS - FRAG_HEAD;
    Reasm *r = NULL, *oldest = NULL;
    for (int i = 0; i < REASM_SLOTS; i++) {
        Reasm *c = &lk->reasm[i];
        if (c->used && c->seq == seq) r = c;
    }
    if (!r) {
        for (int i = 0; i < REASM_SLOTS; i++) {   /* timed out ones go first */
            Reasm *c = &lk->reasm[i];
            if (c->used && now - c->started > REASM_TIMEOUT) {
                reasm_free(c);
                cnt(&lk->evicted, 1);
            }
        }
        for (int i = 0; i < REASM_SLOTS && !r; i++)
            if (!lk->reasm[i].used) r = &lk->reasm[i];
        if (!r) {
            for (int i = 0; i < REASM_SLOTS; i++)
                if (!oldest || lk->reasm[i].started < oldest->started) oldest = &lk->reasm[i];
            reasm_free(oldest);
            cnt(&lk->evicted, 1);
            r = oldest;
        }
        r->buf = malloc(MAX_DATAGRAM + HS);
        if (!r->buf) return NULL;
        r->used = 1;
        r->seq = seq;
        r->count = count;
        r->started = now;
    } else if (r->count != count) {
        reasm_free(r);
        *bad = 1;
        return NULL;
    }
    if ((r->have[index / 64] >> (index % 64)) & 1) return NULL;   /* a duplicate: the first one stands */
    int last = index == count - 1;
    if (!last) {
        if (!r->chunk) {
            if (plen == 0 || (size_t)(count - 1) * plen > MAX_DATAGRAM - HS) { reasm_free(r); *bad = 1; return NULL; }
            r->chunk = (int)plen;
        } else if ((size_t)r->chunk != plen) {
            reasm_free(r);
            *bad = 1;
            return NULL;
        }
        memcpy(r->buf + HS + (size_t)index * r->chunk, pay, plen);
    } else {
        r->last = malloc(plen ? plen : 1);
        if (!r->last) return NULL;
        memcpy(r->last, pay, plen);
        r->last_len = (int)plen;
    }
    r->size += plen;
    if (r->size > MAX_DATAGRAM) { reasm_free(r); *bad = 1; return NULL; }
    r->have[index / 64] |= 1ULL << (index % 64);
    if (++r->nhave < count) return NULL;
    /* all in: the last one goes after the others (its length is free, the others' all chunk) */
    size_t at = HS + (size_t)(count - 1) * r->chunk;
    if (at + r->last_len > MAX_DATAGRAM + HS) { reasm_free(r); *bad = 1; return NULL; }
    memcpy(r->buf + at, r->last, r->last_len);
    memcpy(r->buf, p, HS);
    r->buf[1] &= (uint8_t)~F_FRAG;
    *out_len = at + r->last_len;
    *slot_out = r;
    return r->buf;
}

typedef struct {
    PyObject *list;           /* slow items, built with the GIL taken back for each */
    int failed;
    int opened;               /* an opened datagram went to the engine: the rest of the batch follows it, so
                                 the engine's deliveries are not overtaken by the lane's */
} Slow;

/* One datagram from src_ip. Returns 1 if it must go to the engine as it is (probe, unknown sender). */
static int rx_datagram(Lane *L, LinkSet *set, uint64_t gen, const uint8_t *p, size_t n, uint32_t src_ip,
                       double now, Slow *slow, PyThreadState **ts) {
    if (n < HS + FRAG_HEAD || p[0] != MAGIC) {
        cnt(&L->drops[D_MALFORMED], 1);
        return 0;
    }
    int flags = p[1];
    Link *lk = linkset_find(set, p + 2);
    if (!lk) return 1;                                         /* unknown_peer: the engine counts it */
    if (src_ip != lk->addr.sin_addr.s_addr) { cnt(&L->drops[D_WRONG_SOURCE], 1); return 0; }
    if (flags & ~KNOWN_FLAGS) { cnt(&L->drops[D_MALFORMED], 1); return 0; }
    if (flags & F_PROBE) return 1;
    if (!!(flags & F_ENCRYPTED) != lk->keyed || !!(flags & F_AEGIS) != lk->aegis) {
        cnt(&L->drops[D_AUTH], 1);
        return 0;
    }
    uint64_t seq = get_be64(p + 8);
    if (lk->keyed && !replay_check(lk, seq)) { cnt(&L->drops[D_REPLAY], 1); return 0; }
    Reasm *slot = NULL;
    if (flags & F_FRAG) {
        int bad;
        size_t wlen = 0;
        const uint8_t *whole = reasm_add(lk, p, n, seq, now, &wlen, &slot, &bad);
        if (bad) cnt(&L->drops[D_MALFORMED], 1);
        if (!whole) return 0;
        p = whole;
        n = wlen;
    }
    const uint8_t *body = p + HS;
    size_t blen = n - HS;
    if (lk->keyed) {
        size_t tag = lk->aegis ? AEGIS_TAG : TAG;
        unsigned long long mlen = 0;
        uint8_t nonce[32] = {0};
        int r = -1;
        if (n < HS + BODY_HEAD + tag) {
            cnt(&L->drops[D_MALFORMED], 1);
            goto out;
        }
        if (lk->aegis) {
            put_be64(nonce + 24, seq);
            if (L->aegis_open) r = L->aegis_open(L->rx_pt, &mlen, NULL, body, blen, p, HS, nonce, lk->rx_key);
        } else {
            put_be64(nonce + 4, seq);
            r = L->chacha_open(L->rx_pt, &mlen, NULL, body, blen, p, HS, nonce, lk->rx_key);
        }
        if (r != 0) {
            cnt(&L->drops[D_AUTH], 1);
            goto out;
        }
        body = L->rx_pt;
        blen = mlen;
    }
    if (blen < BODY_HEAD) {
        cnt(&L->drops[D_MALFORMED], 1);
        goto out;
    }
    /* parse every frame before anything is counted or delivered: fast only if all are fine */
    int fast = !slow->opened && !memcmp(body + 6, L->our, 6) && !memcmp(body, lk->name, 6) &&
               !(body[12] & B_RELAY_ONLY);
    size_t at = BODY_HEAD, frames = 0;
    int off = L->off;
    while (at < blen) {
        if (at + 4 > blen) { cnt(&L->drops[D_MALFORMED], 1); goto out; }
        size_t len = be32(body + at);
        at += 4;
        if (len > blen - at) { cnt(&L->drops[D_MALFORMED], 1); goto out; }
        if (fast) {
            const uint8_t *src = body + at + off + 6;
            RxEntry *e = len >= (size_t)off + 14 ? &L->rx_cache[mac_hash(src, NULL)] : NULL;
            fast = e && !(src[0] & 1) && e->gen == gen && e->expires >= now && e->link == lk && !memcmp(e->mac, src, 6);
        }
        at += len;
        frames++;
    }
    if (lk->keyed) replay_accept(lk, seq);
    cnt(&lk->rx_frames, frames);
    cnt(&lk->rx_bytes, n);
    if (fast) {
        L->fast_rx += frames;     /* counted first: a reader that saw the frames sees the count */
        for (at = BODY_HEAD; at < blen;) {
            size_t len = be32(body + at);
            if (write(L->tap_fd, body + at + 4, len) < 0) cnt(&L->drops[D_TAP_WRITE], 1);
            at += 4 + len;
        }
    } else if (!slow->failed) {
        slow->opened = 1;   /* the opened body to the engine, with the GIL taken back for it */
        PyEval_RestoreThread(*ts);
        PyObject *item = Py_BuildValue("(Oy#)", (PyObject *)lk, (const char *)body, (Py_ssize_t)blen);
        if (!item || PyList_Append(slow->list, item) < 0) slow->failed = 1;
        Py_XDECREF(item);
        *ts = PyEval_SaveThread();
    }
out:
    if (slot) reasm_free(slot);
    return 0;
}

/* rx_pump(timeout_ms): wait for datagrams (or a poke), receive a batch and handle what the lane can. Returns
 * the slow items: (datagram, source ip) for the engine to handle whole (probes, unknown senders) and
 * (link, body) for opened datagrams the engine must decide on. */
static PyObject *Lane_rx_pump(Lane *self, PyObject *arg) {
    int timeout = (int)PyLong_AsLong(arg);
    if (timeout == -1 && PyErr_Occurred()) return NULL;
    Slow slow = {PyList_New(0), 0, 0};
    if (!slow.list) return NULL;
    LinkSet *set = self->links;
    Py_INCREF((PyObject *)set);
    uint64_t gen = 0;
    int n = 0, err = 0;
    struct { uint32_t at, len, ip; } raw[RX_BATCH * GSO_SEGMENTS];
    int nraw = 0;
    PyThreadState *ts = PyEval_SaveThread();
    for (int i = 0; i < RX_BATCH; i++) {
        struct msghdr *h = &self->rx_msgs[i].msg_hdr;
        h->msg_name = &self->rx_addr[i];
        h->msg_namelen = sizeof self->rx_addr[i];
        h->msg_iov = &self->rx_iov[i];
        h->msg_iovlen = 1;
        h->msg_control = self->rx_ctl[i].buf;
        h->msg_controllen = sizeof self->rx_ctl[i].buf;
    }
    n = recvmmsg(self->sock_fd, self->rx_msgs, RX_BATCH, MSG_DONTWAIT, NULL);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        struct pollfd pf[2] = {{self->sock_fd, POLLIN, 0}, {self->wake_fd, POLLIN, 0}};
        if (poll(pf, 2, timeout) > 0) {
            if (pf[1].revents & POLLIN) {   /* a poke: cleared; the engine looks at its probers on return */
                uint64_t v;
                ssize_t r = read(self->wake_fd, &v, sizeof v);
                (void)r;
            }
            if (pf[0].revents) n = recvmmsg(self->sock_fd, self->rx_msgs, RX_BATCH, MSG_DONTWAIT, NULL);
        }
    }
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNREFUSED) err = errno;
        n = 0;
    }
    if (n > 0) gen = current(self, &set, &ts);
    double now = now_mono();
    for (int i = 0; i < n; i++) {
        struct msghdr *h = &self->rx_msgs[i].msg_hdr;
        const uint8_t *buf = self->rx_bufs + (size_t)i * RX_BUF;
        size_t len = self->rx_msgs[i].msg_len, seg = 0;
        if (self->rx_addr[i].sin_family != AF_INET) continue;
        uint32_t ip = self->rx_addr[i].sin_addr.s_addr;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c; c = CMSG_NXTHDR(h, c))
            if (c->cmsg_level == SOL_UDP_ && c->cmsg_type == UDP_GRO_ && c->cmsg_len >= CMSG_LEN(sizeof(int))) {
                int v;
                memcpy(&v, CMSG_DATA(c), sizeof v);
                if (v > 0 && (size_t)v < len) seg = (size_t)v;
            }
        if (!seg) seg = len ? len : 1;
        for (size_t at = 0; at < len || (len == 0 && at == 0); at += seg) {
            size_t dl = len - at < seg ? len - at : seg;
            if (rx_datagram(self, set, gen, buf + at, dl, ip, now, &slow, &ts) && nraw < RX_BATCH * GSO_SEGMENTS) {
                raw[nraw].at = (uint32_t)(i * RX_BUF + at);
                raw[nraw].len = (uint32_t)dl;
                raw[nraw].ip = ip;
                nraw++;
            }
            if (len == 0) break;
        }
    }
    PyEval_RestoreThread(ts);
    Py_DECREF((PyObject *)set);
    if (slow.failed) {
        Py_DECREF(slow.list);
        return NULL;
    }
    if (err && !n && !PyList_Size(slow.list)) {
        Py_DECREF(slow.list);
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    for (int k = 0; k < nraw; k++) {
        char ipstr[INET_ADDRSTRLEN];
        struct in_addr a = {raw[k].ip};
        inet_ntop(AF_INET, &a, ipstr, sizeof ipstr);
        PyObject *item = Py_BuildValue("(y#s)", (const char *)self->rx_bufs + raw[k].at, (Py_ssize_t)raw[k].len, ipstr);
        if (!item || PyList_Append(slow.list, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(slow.list);
            return NULL;
        }
        Py_DECREF(item);
    }
    return slow.list;
}

static PyObject *Lane_drops(Lane *self, PyObject *unused) {
    PyObject *d = PyDict_New();
    if (!d) return NULL;
    for (int i = 0; i < D_N; i++) {
        uint64_t v = __atomic_load_n(&self->drops[i], __ATOMIC_RELAXED);
        if (!v) continue;
        PyObject *o = PyLong_FromUnsignedLongLong(v);
        if (!o || PyDict_SetItemString(d, DROP_NAMES[i], o) < 0) {
            Py_XDECREF(o);
            Py_DECREF(d);
            return NULL;
        }
        Py_DECREF(o);
    }
    return d;
}

static PyObject *Lane_get_gso(Lane *self, void *c) {
    return PyBool_FromLong(__atomic_load_n(&self->gso, __ATOMIC_RELAXED));
}

static int Lane_set_gso(Lane *self, PyObject *v, void *c) {
    int t = v ? PyObject_IsTrue(v) : 0;
    if (t < 0) return -1;
    __atomic_store_n(&self->gso, t, __ATOMIC_RELAXED);
    return 0;
}

static PyObject *Lane_get_fast(Lane *self, void *c) {
    return Py_BuildValue("(KK)", (unsigned long long)self->fast_tx, (unsigned long long)self->fast_rx);
}

static PyGetSetDef Lane_getset[] = {
    {"gso", (getter)Lane_get_gso, (setter)Lane_set_gso, "UDP GSO in use (until the kernel refuses it)", NULL},
    {"fast", (getter)Lane_get_fast, NULL, "(frames sent, frames delivered) without the engine", NULL},
    {NULL}};

static PyMethodDef Lane_methods[] = {
    {"set_links", (PyCFunction)Lane_set_links, METH_O, "the links now published (voids every cached decision)"},
    {"flush", (PyCFunction)Lane_flush, METH_NOARGS, "void every cached decision"},
    {"cache_tx", (PyCFunction)Lane_cache_tx, METH_VARARGS, "cache_tx(src_mac, dst_mac, link, dest_peer)"},
    {"cache_rx", (PyCFunction)Lane_cache_rx, METH_VARARGS, "cache_rx(src_mac, link)"},
    {"send", (PyCFunction)Lane_send, METH_VARARGS, "send(link, origin, dest, frames, relay_only)"},
    {"tx_pump", (PyCFunction)Lane_tx_pump, METH_O, "tx_pump(timeout_ms) -> frames for the engine, or None"},
    {"rx_pump", (PyCFunction)Lane_rx_pump, METH_O, "rx_pump(timeout_ms) -> items for the engine"},
    {"drops", (PyCFunction)Lane_drops, METH_NOARGS, "reason -> datagrams or frames dropped here"},
    {NULL}};

static PyType_Slot Lane_slots[] = {
    {Py_tp_dealloc, Lane_dealloc}, {Py_tp_doc, "The sleeve's common case, without the GIL."},
    {Py_tp_methods, Lane_methods}, {Py_tp_getset, Lane_getset}, {Py_tp_init, Lane_init},
    {Py_tp_new, PyType_GenericNew}, {0, NULL}};
static PyType_Spec Lane_spec = {"weavenet.datapath._lane.Lane", sizeof(Lane), 0, Py_TPFLAGS_DEFAULT, Lane_slots};

static struct PyModuleDef lanemodule = {PyModuleDef_HEAD_INIT, "_lane", "The sleeve's common case in C.", -1, NULL};

PyMODINIT_FUNC PyInit__lane(void) {
    LinkType = (PyTypeObject *)PyType_FromSpec(&Link_spec);
    LinkSetType = (PyTypeObject *)PyType_FromSpec(&LinkSet_spec);
    LaneType = (PyTypeObject *)PyType_FromSpec(&Lane_spec);
    if (!LinkType || !LinkSetType || !LaneType) return NULL;
    PyObject *m = PyModule_Create(&lanemodule);
    if (!m) return NULL;
    if (PyModule_AddObjectRef(m, "Link", (PyObject *)LinkType) < 0 ||
        PyModule_AddObjectRef(m, "Lane", (PyObject *)LaneType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    /* sleeve.py's wire constants as compiled in: a test checks they match */
    struct { const char *n; long v; } k[] = {
        {"HEADER", HS}, {"BODY_HEAD", BODY_HEAD}, {"FRAG_HEAD", FRAG_HEAD}, {"MAGIC", MAGIC},
        {"F_ENCRYPTED", F_ENCRYPTED}, {"F_FRAG", F_FRAG}, {"F_PROBE", F_PROBE}, {"F_AEGIS", F_AEGIS},
        {"KNOWN_FLAGS", KNOWN_FLAGS}, {"B_RELAY_ONLY", B_RELAY_ONLY}, {"TAG", TAG}, {"AEGIS_TAG", AEGIS_TAG},
        {"MAX_DATAGRAM", MAX_DATAGRAM}, {"MAX_FRAGS", MAX_FRAGS}, {"UDP_IP", UDP_IP},
        {"BATCH_FRAMES", BATCH_FRAMES}, {"BATCH_BYTES", BATCH_BYTES}, {"REASM_SLOTS", REASM_SLOTS},
        {"REPLAY_BITS", REPLAY_BITS}, {"GSO_SEGMENTS", GSO_SEGMENTS}, {"SEND_TIMEOUT_MS", SEND_TIMEOUT_MS},
        {"CACHE_SLOTS", CACHE_SLOTS}, {NULL, 0}};
    for (int i = 0; k[i].n; i++)
        if (PyModule_AddIntConstant(m, k[i].n, k[i].v) < 0) {
            Py_DECREF(m);
            return NULL;
        }
    if (PyModule_AddObject(m, "REASM_TIMEOUT", PyFloat_FromDouble(REASM_TIMEOUT)) < 0 ||
        PyModule_AddObject(m, "CACHE_TTL", PyFloat_FromDouble(CACHE_TTL)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
