/* A JACK MIDI client for improv's live ports: one port, its process callback in C.
 *
 * Why not python-rtmidi on JACK: its input callback takes the GIL inside the server's cycle, and
 * its close unregisters the port while the process callback may still be using it (a segfault
 * in libjack when a port closes under load). Here the cycle never touches Python.
 *
 * Sample-accurate, as a DAW is (jack_frames.h): an input's messages go into a lock-free ring
 * stamped with their frame's time on CLOCK_MONOTONIC (the clock of Python's time.perf_counter),
 * and a semaphore wakes the reader. An output's sends carry the time they are due (0: as soon as
 * possible); the scheduler hands them over a little ahead (`jm_lead_s`), each cycle writes those
 * due before its end at their frame, in order, and keeps the rest. A message never overtakes one
 * sent before it that it must follow: the same note of the same channel (an off never before its
 * on), any message of its channel for a channel-wide one (All Notes Off, sustain), or another
 * system message. Closing writes what waits, then deactivates the client, so no callback runs
 * while the port goes away. A cycle counter shows whether JACK runs the client at all (a client
 * the server never runs hears and sends nothing). The duet's reflex (jack_reflex.h) answers a
 * note-on from the input's callback through the output's.
 *
 * Built by setup.py as improv._jack_midi against libjack.so.0 (no -dev headers needed), loaded
 * with ctypes by improv/jack_midi.py; importing it as a module gives an empty one.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jack_api.h"
#include "jack_frames.h"
#include "jack_reflex.h"

#define RING_BYTES 65536
#define MAX_MESSAGE 1024 /* longer messages (a sysex dump) are dropped and counted */
#define MAX_OUT 16        /* an output's longest message (improv sends notes, CCs, clock) */
#define PENDING 1024      /* an output's messages handed over and not yet due */
#define CLOSE_WAIT_S 0.2  /* closing waits this long at most for what is handed over to go out */
#define REFLEX_STALE_S 0.1 /* a reflex note this late is dropped (see take_handed_over) */

typedef struct {
    double stamp;
    uint16_t size;
} in_header;

typedef struct {
    double due; /* CLOCK_MONOTONIC seconds; 0: as soon as possible */
    uint16_t size;
} out_header;

typedef struct {
    double due; /* after the ordering rule (see the top) */
    uint16_t size;
    uint8_t data[MAX_OUT];
} pending_t;

typedef struct jm {
    jack_client_t *client;
    jack_port_t *_Atomic port;
    int is_input;
    int active;
    jack_ringbuffer_t *ring;
    sem_t ready;
    atomic_ulong cycles;
    atomic_ulong dropped;
    atomic_int shut_down;
    atomic_int ignore; /* input: bit 0 sysex, bit 1 timing (clock), bit 2 active sensing */
    atomic_int flush;  /* output, closing: write everything handed over, due or not */
    atomic_uint waiting; /* output: messages handed over and not yet written */
    atomic_ulong seen, read; /* input: messages put in the ring, and read from it (the reflex's count) */
    jack_port_t *_Atomic order; /* the reflex's "reflex" port: an input's out, an output's in (jm_reflex_link) */
    pending_t pending[PENDING]; /* output: the process thread's own */
    uint32_t npending;
} jm;

static double now_s(void) { return monotonic_s(); }

static int ignored(const jm *c, const jack_midi_data_t *data, size_t size) {
    int mask = atomic_load(&c->ignore);
    if (size == 0) return 1;
    if (data[0] == 0xF0 || data[0] == 0xF7) return mask & 1;
    if (data[0] == 0xF8) return mask & 2;
    if (data[0] == 0xFE) return mask & 4;
    return 0;
}

static void process_input(jm *c, void *buffer, frame_clock fc) {
    uint32_t count = jack_midi_get_event_count(buffer);
    int wrote = 0;
    for (uint32_t i = 0; i < count; i++) {
        jack_midi_event_t ev;
        if (jack_midi_event_get(&ev, buffer, i) != 0 || ignored(c, ev.buffer, ev.size)) continue;
        in_header h = {fc.start_s + ev.time * fc.frame_s, (uint16_t)ev.size};
        if (ev.size > MAX_MESSAGE || jack_ringbuffer_write_space(c->ring) < sizeof h + ev.size) {
            atomic_fetch_add(&c->dropped, 1);
            continue;
        }
        unsigned long seen = atomic_load(&c->seen);
        reflex_hear(c, seen, ev.buffer, ev.size, h.stamp); /* its record before the message */
        jack_ringbuffer_write(c->ring, (const char *)&h, sizeof h);
        jack_ringbuffer_write(c->ring, (const char *)ev.buffer, ev.size);
        atomic_store(&c->seen, seen + 1);
        wrote = 1;
    }
    if (wrote) sem_post(&c->ready);
}

/* Whether `later`, sent after `earlier`, must not go out before it (see the top). */
static int follows(const pending_t *later, const pending_t *earlier) {
    uint8_t a = later->data[0], b = earlier->data[0];
    if (a >= 0xF0 || b >= 0xF0) return a >= 0xF0 && b >= 0xF0;
    if ((a & 0x0F) != (b & 0x0F)) return 0;
    int a_note = (a & 0xF0) <= 0xA0, b_note = (b & 0xF0) <= 0xA0; /* off, on, poly pressure */
    if (a_note && b_note) return later->size > 1 && earlier->size > 1 && later->data[1] == earlier->data[1];
    return 1;
}

/* The message just copied to the end of the pending list joins it, after those it must follow. */
static void add_pending(jm *c, uint16_t size, double due) {
    pending_t *p = &c->pending[c->npending];
    p->size = size;
    p->due = due;
    for (uint32_t i = 0; i < c->npending; i++)
        if (c->pending[i].due > p->due && follows(p, &c->pending[i])) p->due = c->pending[i].due;
    c->npending++;
}

/* Move what the reflex played (jack_reflex.h), then what the sender handed over, from their rings
 * to the pending list: the reflex's notes answer a note the engine had not read, so nothing the
 * engine handed over since can be meant to precede them. A reflex note left from before this
 * output was linked (the engine has taken it as sent and may have ended it since) is dropped. */
static void take_handed_over(jm *c, double now) {
    reflex_note note;
    while (c->npending < PENDING && reflex_take_note(c, &note)) {
        if (note.due < now - REFLEX_STALE_S) continue;
        memcpy(c->pending[c->npending].data, note.data, sizeof note.data);
        atomic_fetch_add(&c->waiting, 1);
        add_pending(c, sizeof note.data, note.due);
    }
    out_header h;
    while (c->npending < PENDING && jack_ringbuffer_read_space(c->ring) >= sizeof h) {
        jack_ringbuffer_peek(c->ring, (char *)&h, sizeof h);
        if (jack_ringbuffer_read_space(c->ring) < sizeof h + h.size) break;
        jack_ringbuffer_read_advance(c->ring, sizeof h);
        jack_ringbuffer_read(c->ring, (char *)c->pending[c->npending].data, h.size);
        add_pending(c, h.size, h.due);
    }
}

static void process_output(jm *c, void *buffer, jack_nframes_t nframes, frame_clock fc) {
    jack_midi_clear_buffer(buffer);
    take_handed_over(c, fc.start_s);
    if (c->npending == 0) return;
    int flush = atomic_load(&c->flush);
    uint32_t order[PENDING], frame[PENDING], n = 0;
    for (uint32_t i = 0; i < c->npending; i++) { /* due this cycle: by frame, then as sent */
        jack_nframes_t f = frame_of(fc, c->pending[i].due, nframes);
        if (f >= nframes && !flush) continue;
        n = by_frame(order, frame, n, i, f < nframes ? f : nframes - 1);
    }
    uint32_t written = 0;
    for (; written < n; written++) {
        const pending_t *p = &c->pending[order[written]];
        if (jack_midi_event_write(buffer, frame[written], p->data, p->size) != 0) break; /* full: next cycle */
        c->pending[order[written]].size = 0;
    }
    uint32_t kept = 0;
    for (uint32_t i = 0; i < c->npending; i++)
        if (c->pending[i].size > 0) c->pending[kept++] = c->pending[i];
    c->npending = kept;
    atomic_fetch_sub(&c->waiting, written);
}

static int process(jack_nframes_t nframes, void *arg) {
    jm *c = arg;
    frame_clock fc = frame_clock_now(c->client); /* first: the cycle's frame 0 */
    atomic_fetch_add(&c->cycles, 1);
    jack_port_t *port = atomic_load(&c->port);
    if (port == NULL) return 0;
    void *buffer = jack_port_get_buffer(port, nframes);
    jack_port_t *order = atomic_load(&c->order);
    if (order != NULL && c->is_input) jack_midi_clear_buffer(jack_port_get_buffer(order, nframes)); /* never written */
    if (c->is_input)
        process_input(c, buffer, fc);
    else
        process_output(c, buffer, nframes, fc);
    return 0;
}

static void on_shutdown(void *arg) {
    jm *c = arg;
    atomic_store(&c->shut_down, 1);
    sem_post(&c->ready);
}

/* A client called `name` (JACK may rename it if taken), not yet active. NULL: no server (status
 * says why). */
jm *jm_open(const char *name, int is_input, int *status) {
    jm *c = calloc(1, sizeof *c);
    if (c == NULL) return NULL;
    c->client = jack_client_open(name, JackNoStartServer, status);
    if (c->client == NULL) {
        free(c);
        return NULL;
    }
    c->is_input = is_input;
    c->ring = jack_ringbuffer_create(RING_BYTES);
    sem_init(&c->ready, 0, 0);
    atomic_store(&c->ignore, 0);
    jack_set_process_callback(c->client, process, c);
    jack_on_shutdown(c->client, on_shutdown, c);
    return c;
}

/* Register the port and activate the client; 0 on success. */
int jm_register(jm *c, const char *port_name) {
    if (atomic_load(&c->port) != NULL) return 0;
    unsigned long flags = c->is_input ? JackPortIsInput : JackPortIsOutput;
    jack_port_t *port = jack_port_register(c->client, port_name, JACK_DEFAULT_MIDI_TYPE, flags, 0);
    if (port == NULL) return -1;
    atomic_store(&c->port, port);
    if (!c->active) {
        if (jack_activate(c->client) != 0) return -2;
        c->active = 1;
    }
    return 0;
}

const char *jm_port_name(jm *c) {
    jack_port_t *port = atomic_load(&c->port);
    return port == NULL ? NULL : jack_port_name(port);
}

const char *jm_client_name(jm *c) { return jack_get_client_name(c->client); }

/* Ports of other clients this one can connect to (outputs for an input, inputs for an output);
 * free with jm_free. */
const char **jm_ports(jm *c) {
    unsigned long flags = c->is_input ? JackPortIsOutput : JackPortIsInput;
    return jack_get_ports(c->client, NULL, JACK_DEFAULT_MIDI_TYPE, flags);
}

void jm_free(void *p) { jack_free(p); }

/* Connect our port to (output) or from (input) the port called `other`; 0 or EEXIST: connected. */
int jm_connect(jm *c, const char *other) {
    const char *own = jm_port_name(c);
    if (own == NULL) return -1;
    return c->is_input ? jack_connect(c->client, other, own) : jack_connect(c->client, own, other);
}

int jm_disconnect(jm *c) {
    jack_port_t *port = atomic_load(&c->port);
    return port == NULL ? 0 : jack_port_disconnect(c->client, port);
}

/* Hand one message over, due at `due_s` (CLOCK_MONOTONIC; 0 or past: the next cycle's start): 0,
 * or -1 when the ring is full or it is too long. */
int jm_send_at(jm *c, const uint8_t *data, int size, double due_s) {
    out_header h = {due_s, (uint16_t)size};
    if (size <= 0 || size > MAX_OUT || jack_ringbuffer_write_space(c->ring) < sizeof h + h.size) return -1;
    atomic_fetch_add(&c->waiting, 1);
    jack_ringbuffer_write(c->ring, (const char *)&h, sizeof h);
    jack_ringbuffer_write(c->ring, (const char *)data, h.size);
    return 0;
}

/* How long before its due time a message must be handed over to go out at its frame: a period,
 * and the sender's wake-up's margin. */
double jm_lead_s(jm *c, double margin_s) {
    jack_nframes_t rate = jack_get_sample_rate(c->client);
    return (rate > 0 ? (double)jack_get_buffer_size(c->client) / rate : 0.0) + margin_s;
}

/* Messages handed over and not yet written. */
unsigned jm_waiting(jm *c) { return atomic_load(&c->waiting); }

/* The next received message: its size (copied into `data`, `*stamp` set), or 0 when none. */
int jm_read(jm *c, uint8_t *data, int capacity, double *stamp) {
    in_header h;
    if (jack_ringbuffer_read_space(c->ring) < sizeof h) return 0;
    jack_ringbuffer_read(c->ring, (char *)&h, sizeof h);
    atomic_fetch_add(&c->read, 1);
    if (h.size > capacity) {
        jack_ringbuffer_read_advance(c->ring, h.size);
        atomic_fetch_add(&c->dropped, 1);
        return 0;
    }
    jack_ringbuffer_read(c->ring, (char *)data, h.size);
    *stamp = h.stamp;
    return h.size;
}

/* Wait up to `timeout_s` for messages (or a wake); 1 woken, 0 timed out. */
int jm_wait(jm *c, double timeout_s) {
    double deadline = now_s() + (timeout_s > 0 ? timeout_s : 0);
    struct timespec ts = {(time_t)deadline, (long)((deadline - (time_t)deadline) * 1e9)};
    while (sem_clockwait(&c->ready, CLOCK_MONOTONIC, &ts) != 0) {
        if (errno != EINTR) return 0;
    }
    return 1;
}

void jm_wake(jm *c) { sem_post(&c->ready); }

void jm_ignore(jm *c, int mask) { atomic_store(&c->ignore, mask); }

unsigned long jm_cycles(jm *c) { return atomic_load(&c->cycles); }

unsigned long jm_dropped(jm *c) { return atomic_load(&c->dropped); }

int jm_shut_down(jm *c) { return atomic_load(&c->shut_down); }

/* The client's "reflex" port (an input client's MIDI out, an output client's MIDI in), registered
 * once; NULL if JACK refuses it. */
static jack_port_t *order_port(jm *c) {
    jack_port_t *port = atomic_load(&c->order);
    if (port == NULL) {
        port = jack_port_register(c->client, "reflex", JACK_DEFAULT_MIDI_TYPE,
                                  c->is_input ? JackPortIsOutput : JackPortIsInput, 0);
        atomic_store(&c->order, port);
    }
    return port;
}

/* The reflex (jack_reflex.h) from input `in` to output `out` (NULL: none) from now on. On a
 * realtime server, a connection from the input client's "reflex" port to the output client's,
 * which carries nothing, makes JACK run the output client after the input client in every cycle
 * (unconnected, the output client, fed by no one, runs first): the reflex's note then leaves in
 * the cycle of the note-on it answers. Not on a non-realtime server, where the longer chain of
 * clients misses the cycle more often and JACK drops what they send (docs/TIMING.md): there the
 * note leaves at the next cycle's start. 1: ordered; 0: not (a non-realtime server, or no
 * output); -1: the connection failed. */
int jm_reflex_link(jm *in, jm *out) {
    reflex_disarm();
    atomic_store(&reflex.in, in);
    atomic_store(&reflex.out, out);
    if (out == NULL || !jack_is_realtime(in->client)) return 0;
    jack_port_t *from = order_port(in), *to = order_port(out);
    if (from == NULL || to == NULL) return -1;
    int result = jack_connect(in->client, jack_port_name(from), jack_port_name(to));
    return result == 0 || result == EEXIST ? 1 : -1;
}

/* Arm the reflex with `table` (NULL: the one armed last) for the first note-on after the
 * messages `in` has read so far. */
void jm_reflex_arm(jm *in, const reflex_table *table) { reflex_arm(table, atomic_load(&in->read)); }

void jm_reflex_disarm(void) { reflex_disarm(); }

/* The oldest record of a reflex the engine has not taken, left in place (1, copied into `fired`), or 0. */
int jm_reflex_peek(reflex_fired *fired) {
    unsigned head = atomic_load(&reflex.fired_head), tail = atomic_load(&reflex.fired_tail);
    if (head == tail) return 0;
    *fired = reflex.fired[tail % REFLEX_RING];
    return 1;
}

/* The same, taken. */
int jm_reflex_fired(reflex_fired *fired) {
    if (!jm_reflex_peek(fired)) return 0;
    atomic_fetch_add(&reflex.fired_tail, 1);
    return 1;
}

/* Messages the input `in` has read. */
unsigned long jm_reads(jm *c) { return atomic_load(&c->read); }

/* Write what waits (an output, a little while at most), deactivate (no callback runs after this
 * returns), then close the client and free. */
void jm_close(jm *c) {
    const void *linked = c;
    if (atomic_compare_exchange_strong(&reflex.in, &linked, NULL)) reflex_disarm();
    linked = c;
    atomic_compare_exchange_strong(&reflex.out, &linked, NULL);
    if (c->active && !c->is_input && !atomic_load(&c->shut_down)) { /* what waits goes out first */
        atomic_store(&c->flush, 1);
        double deadline = now_s() + CLOSE_WAIT_S;
        struct timespec ms = {0, 1000000};
        while (atomic_load(&c->waiting) > 0 && now_s() < deadline) nanosleep(&ms, NULL);
    }
    if (c->active) jack_deactivate(c->client);
    jack_client_close(c->client);
    jack_ringbuffer_free(c->ring);
    sem_destroy(&c->ready);
    free(c);
}

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_jack_midi",
                                    "improv's JACK MIDI client, used through ctypes (improv.jack_midi)",
                                    -1, NULL, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__jack_midi(void) { return PyModule_Create(&module); }
