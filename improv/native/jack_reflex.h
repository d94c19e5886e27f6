/* The duet's reflex: a player's note-on answered inside the JACK cycle that brings it in.
 *
 * The engine prepares, between events, the table its next reaction is drawn from (improv.reaction:
 * for each pitch class a key may strike, the cumulative weights of the notes allowed) and arms
 * it here with a uniform number drawn ahead (improv.reflex). The input client's process callback,
 * at the first note-on after the messages the engine has read, draws the note exactly as
 * `Reaction.draw_ready` would and hands it to the output client, due at the note-on's own frame:
 * no thread wakes and no period boundary is crossed before the answer leaves. It tells the engine
 * what it played (a record the engine reads before the note-on, which the callback puts in the
 * input's ring only after the record), so the engine adopts the note as its own and never draws a
 * second one. A table fires once; any message the engine has not read yet makes it stale.
 *
 * One reflex per process, linking one input client to one output client (by identity: neither
 * is dereferenced by the other's callback, so either may close at any time). The input callback
 * is the only writer of the note ring and the record ring; their readers are the output callback
 * and the engine thread. Arming first disarms and waits for the callback to leave the table (the
 * `reading` flag; microseconds at most), then writes it. */
#ifndef IMPROV_JACK_REFLEX_H
#define IMPROV_JACK_REFLEX_H
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#define REFLEX_CLASSES 12
#define REFLEX_TOKENS 1024 /* the largest vocabulary it takes (improv's models have 90-144 tokens) */
#define REFLEX_RING 64     /* power of two */

typedef struct {
    /* Reaction._cum: row c, for a key of pitch class c struck, the cumulative weights over the
     * vocabulary's tokens (only the first `size` of each row are copied) */
    double cum[REFLEX_CLASSES][REFLEX_TOKENS];
    int16_t on_id[128];             /* a pitch's note-start token, or -1 */
    int16_t pitch[REFLEX_TOKENS];   /* each token's value (a note start's pitch) */
    uint8_t is_on[REFLEX_TOKENS];   /* whether the token starts a note */
    int size;                       /* tokens in the vocabulary */
    uint8_t velocity[128];          /* the answer's velocity for the player's */
    int listen_channel;             /* -1: any */
    int out_channel;
    int victim;           /* the pitch of improv's that lets go first (-1: none) ... */
    double victim_until;  /* ... if the note-on comes before this time (its planned end) */
    double u;             /* the uniform number of the draw, in [0, 1) */
} reflex_table;

typedef struct {
    double stamp;       /* the note-on's time (CLOCK_MONOTONIC) */
    unsigned long seq;  /* the note-on's place among the input's messages (0: the first) */
    uint8_t struck;     /* the player's key */
    uint8_t pitch;      /* the answer */
    uint8_t velocity;
    uint8_t channel;    /* improv's, where it played */
    int8_t victim;      /* the pitch let go for it, or -1 */
} reflex_fired;

typedef struct {
    double due;
    uint8_t data[3];
} reflex_note;

static struct {
    const void *_Atomic in, *_Atomic out; /* the linked clients (identity only) */
    atomic_llong armed;                   /* -1, or how many of the input's messages were read when armed */
    atomic_int reading;                   /* the input callback is inside the table */
    reflex_table table;
    reflex_note notes[REFLEX_RING];
    atomic_uint notes_head, notes_tail;
    reflex_fired fired[REFLEX_RING];
    atomic_uint fired_head, fired_tail;
} reflex = {.armed = -1};

/* The note for key `struck` from row `struck % 12` with the uniform `u`, the struck key's own
 * weight left out: `Reaction.draw_ready`, step for step; -1 when none. */
static inline int reflex_draw(const reflex_table *t, int struck) {
    const double *cum = t->cum[struck % REFLEX_CLASSES];
    int n = t->size, token = t->on_id[struck];
    if (n <= 0) return -1;
    double below = token > 0 ? cum[token - 1] : 0.0, skip = token >= 0 ? cum[token] - below : 0.0;
    double left = cum[n - 1] - skip;
    if (!(left > 0)) return -1;
    double u = t->u * left;
    if (token >= 0 && u >= below) u += skip;
    int lo = 0, hi = n; /* the first token whose cumulative weight exceeds u (numpy's searchsorted, right) */
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (cum[mid] > u) hi = mid;
        else lo = mid + 1;
    }
    int index = lo < n - 1 ? lo : n - 1;
    return index != token && t->is_on[index] ? t->pitch[index] : -1;
}

static inline int reflex_push_note(double due, uint8_t status, uint8_t pitch, uint8_t velocity) {
    unsigned head = atomic_load(&reflex.notes_head), tail = atomic_load(&reflex.notes_tail);
    if (head - tail >= REFLEX_RING) return -1;
    reflex_note *n = &reflex.notes[head % REFLEX_RING];
    n->due = due;
    n->data[0] = status;
    n->data[1] = pitch;
    n->data[2] = velocity;
    atomic_store(&reflex.notes_head, head + 1);
    return 0;
}

/* The input client `in` heard `data` at `stamp`, its message number `seen`, before it goes in the
 * ring: answer it if it is a note-on on the table's channel and the table was armed after the
 * engine had read every message before it. */
static inline void reflex_hear(const void *in, unsigned long seen, const uint8_t *data, size_t size,
                               double stamp) {
    if (atomic_load(&reflex.in) != in || size != 3 || (data[0] & 0xF0) != 0x90 || data[1] > 0x7F ||
        data[2] > 0x7F || data[2] == 0)
        return; /* (a broken message is the engine's to drop) */
    long long armed = atomic_load(&reflex.armed);
    if (armed < 0 || (unsigned long)armed != seen) return;
    atomic_store(&reflex.reading, 1);
    armed = atomic_exchange(&reflex.armed, -1);
    const reflex_table *t = &reflex.table;
    int struck = data[1] & 0x7F, channel = data[0] & 0x0F;
    if (armed == (long long)seen && (t->listen_channel < 0 || t->listen_channel == channel)) {
        unsigned fh = atomic_load(&reflex.fired_head), ft = atomic_load(&reflex.fired_tail);
        unsigned nh = atomic_load(&reflex.notes_head), nt = atomic_load(&reflex.notes_tail);
        int pitch = reflex_draw(t, struck);
        if (pitch >= 0 && fh - ft < REFLEX_RING && nh - nt + 2 <= REFLEX_RING) {
            int victim = t->victim >= 0 && stamp < t->victim_until ? t->victim : -1;
            uint8_t out = (uint8_t)(t->out_channel & 0x0F), velocity = t->velocity[data[2] & 0x7F];
            if (victim >= 0) reflex_push_note(stamp, 0x80 | out, (uint8_t)victim, 0);
            reflex_push_note(stamp, 0x90 | out, (uint8_t)pitch, velocity);
            reflex_fired *f = &reflex.fired[fh % REFLEX_RING];
            f->stamp = stamp;
            f->seq = seen;
            f->struck = (uint8_t)struck;
            f->pitch = (uint8_t)pitch;
            f->velocity = velocity;
            f->channel = out;
            f->victim = (int8_t)victim;
            atomic_store(&reflex.fired_head, fh + 1);
        }
    }
    atomic_store(&reflex.reading, 0);
}

/* The output client `out`'s next reflex note (1, copied into `note`), or 0. */
static inline int reflex_take_note(const void *out, reflex_note *note) {
    if (atomic_load(&reflex.out) != out) return 0;
    unsigned head = atomic_load(&reflex.notes_head), tail = atomic_load(&reflex.notes_tail);
    if (head == tail) return 0;
    *note = reflex.notes[tail % REFLEX_RING];
    atomic_store(&reflex.notes_tail, tail + 1);
    return 1;
}

/* Disarm; returns once the input callback is out of the table. */
static inline void reflex_disarm(void) {
    atomic_store(&reflex.armed, -1);
    struct timespec pause = {0, 20000};
    while (atomic_load(&reflex.reading)) nanosleep(&pause, NULL);
}

/* Arm `table` (NULL: the one armed last, unchanged) for the first note-on after `read` of the
 * input's messages were read. */
static inline void reflex_arm(const reflex_table *table, unsigned long read) {
    reflex_disarm();
    if (table != NULL) {
        reflex_table *t = &reflex.table;
        int n = table->size < REFLEX_TOKENS ? (table->size > 0 ? table->size : 0) : REFLEX_TOKENS;
        for (int c = 0; c < REFLEX_CLASSES; c++) memcpy(t->cum[c], table->cum[c], n * sizeof(double));
        memcpy(t->on_id, table->on_id, sizeof t->on_id);
        memcpy(t->pitch, table->pitch, n * sizeof t->pitch[0]);
        memcpy(t->is_on, table->is_on, n);
        memcpy(t->velocity, table->velocity, sizeof t->velocity);
        t->size = n;
        t->listen_channel = table->listen_channel;
        t->out_channel = table->out_channel;
        t->victim = table->victim;
        t->victim_until = table->victim_until;
        t->u = table->u;
    }
    atomic_store(&reflex.armed, (long long)read);
}
#endif
