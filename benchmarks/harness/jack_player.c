/* A JACK MIDI player for the harness (the bench's clock sender and calls, the frame tests): one
 * output port that writes each message at the frame of the time it is due, as a DAW writes its
 * MIDI clock and its tracks (sample-accurate, jack_frames.h). python-rtmidi's JACK output writes
 * every message at frame 0 of the cycle after the send, so what it plays is quantized to the
 * period (1.33 ms at 64 frames) and jitters with the sender's wake-up.
 *
 * stdin: one line per message, "<due seconds on CLOCK_MONOTONIC> <byte> <byte> ..." (Python's
 * time.perf_counter; due 0 or past: frame 0 of the next cycle). The main thread parses lines into
 * a lock-free single-producer/single-consumer ring; the process callback moves them into a
 * pending list (in arrival order) and writes those due before the end of its cycle at their
 * frame, by frame and then in arrival order (jack_midi_event_write wants frames non-decreasing);
 * later ones stay pending. Same shape as jack_recorder.c: no JACK headers, links libjack.so.0.
 *
 *   jack_player CLIENT_NAME     (port CLIENT_NAME:out; prints "ready"; exits when stdin closes,
 *                                after writing what is due within DRAIN_S)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../../improv/native/jack_api.h"
#include "../../improv/native/jack_frames.h"

#define RING 4096    /* messages handed over, not yet taken by the process callback */
#define PENDING 1024 /* messages taken and not yet due */
#define MAXBYTES 16
#define DRAIN_S 3.0 /* stdin closed: how long the pending may take to go out */

typedef struct {
    double due_s;
    uint32_t n;
    unsigned char b[MAXBYTES];
} message_t;

static message_t ring[RING];
static uint64_t head, tail;    /* written by the main thread / the JACK thread only */
static uint64_t handed, taken; /* messages put in the ring / written to the port: main / JACK */
static message_t pending[PENDING];
static uint32_t npending; /* the JACK thread's own */
static jack_client_t *client;
static jack_port_t *port;

static void take_handed_over(void) {
    uint64_t h = __atomic_load_n(&head, __ATOMIC_ACQUIRE), t = tail;
    for (; t < h && npending < PENDING; t++)
        pending[npending++] = ring[t % RING];
    __atomic_store_n(&tail, t, __ATOMIC_RELEASE);
}

static int process(jack_nframes_t nframes, void *arg) {
    (void)arg;
    frame_clock fc = frame_clock_now(client); /* first: the cycle's frame 0 */
    void *buf = jack_port_get_buffer(port, nframes);
    jack_midi_clear_buffer(buf);
    take_handed_over();
    if (npending == 0)
        return 0;
    uint32_t order[PENDING], frame[PENDING], n = 0;
    for (uint32_t i = 0; i < npending; i++) { /* due this cycle: by frame, then as handed over */
        jack_nframes_t f = frame_of(fc, pending[i].due_s, nframes);
        if (f < nframes)
            n = by_frame(order, frame, n, i, f);
    }
    uint32_t written = 0;
    for (; written < n; written++) {
        message_t *m = &pending[order[written]];
        if (jack_midi_event_write(buf, frame[written], m->b, m->n) != 0)
            break; /* buffer full: the rest next cycle, at its frame 0 */
        m->n = 0;
    }
    uint32_t kept = 0;
    for (uint32_t i = 0; i < npending; i++)
        if (pending[i].n > 0)
            pending[kept++] = pending[i];
    npending = kept;
    __atomic_store_n(&taken, taken + written, __ATOMIC_RELEASE);
    return 0;
}

/* "<due> <byte> ..." -> m; 0 if the line is not a message. */
static int parse(const char *line, message_t *m) {
    char *end;
    m->due_s = strtod(line, &end);
    if (end == line)
        return 0;
    m->n = 0;
    for (const char *p = end;; p = end) {
        unsigned long byte = strtoul(p, &end, 10);
        if (end == p)
            break;
        if (byte > 255 || m->n == MAXBYTES)
            return 0;
        m->b[m->n++] = (unsigned char)byte;
    }
    return m->n > 0;
}

static void hand_over(const message_t *m) {
    while (head - __atomic_load_n(&tail, __ATOMIC_ACQUIRE) >= RING)
        usleep(1000); /* full: the callback takes up to PENDING a cycle */
    ring[head % RING] = *m;
    __atomic_store_n(&head, head + 1, __ATOMIC_RELEASE);
    handed++;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: jack_player CLIENT_NAME\n");
        return 2;
    }
    int status = 0;
    client = jack_client_open(argv[1], JackNoStartServer | JackUseExactName, &status);
    if (!client) {
        fprintf(stderr, "jack_player: cannot open JACK client %s (status 0x%x)\n", argv[1], status);
        return 1;
    }
    port = jack_port_register(client, "out", JACK_DEFAULT_MIDI_TYPE, JackPortIsOutput, 0);
    if (!port || jack_set_process_callback(client, process, NULL) != 0 || jack_activate(client) != 0) {
        fprintf(stderr, "jack_player: cannot register %s:out\n", argv[1]);
        jack_client_close(client);
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    char *line = NULL;
    size_t size = 0;
    while (getline(&line, &size, stdin) > 0) {
        message_t m;
        if (parse(line, &m))
            hand_over(&m);
        else if (line[0] != '\n')
            fprintf(stderr, "jack_player: not a message (\"<due s> <byte> ...\", at most %d bytes): %s", MAXBYTES,
                    line);
    }
    free(line);
    for (double give_up_s = monotonic_s() + DRAIN_S;
         __atomic_load_n(&taken, __ATOMIC_ACQUIRE) < handed && monotonic_s() < give_up_s;)
        usleep(1000);
    uint64_t left = handed - __atomic_load_n(&taken, __ATOMIC_ACQUIRE);
    jack_deactivate(client);
    if (left)
        fprintf(stderr, "jack_player: %llu messages not written (not due within %g s of stdin closing)\n",
                (unsigned long long)left, DRAIN_S);
    jack_client_close(client);
    return 0;
}
