/* A JACK MIDI recorder for the real-port harness (tests, `improv bench`, the soak): one input
 * port, one line per message on stdout, "<seconds> <byte> <byte> ...", stamped with the time of
 * the event's frame on CLOCK_MONOTONIC (the clock of Python's time.perf_counter and of the
 * daemon): sample-accurate, as a DAW reads its input at the event's frame (jack_frames.h), so an
 * arrival is not rounded to its cycle (1.33 ms at 64 frames) nor moved by the callback's wake-up.
 *
 * Why C: rtmidi's JACK input calls its user callback for event i before it copies event i+1 out
 * of the port buffer. A Python callback that waits (GIL, a preempted thread) outlives the cycle,
 * the next cycle rewrites the buffer, and the later notes of a chord arrive as copies of another
 * note. This callback copies every event of the cycle into a ring and returns; the main thread
 * prints. It needs no JACK headers (improv/native/jack_api.h declares what it uses) and links
 * libjack.so.0.
 *
 *   jack_recorder CLIENT_NAME     (port CLIENT_NAME:in; exits when stdin closes)
 * Ignored, as the tests' rtmidi recorder did: SysEx, MIDI clock and MTC, active sensing.
 */
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../../improv/native/jack_api.h"
#include "../../improv/native/jack_frames.h"

#define RING 65536 /* messages; a 10-minute soak at 50 events/s drains it far faster */
#define MAXBYTES 16

typedef struct {
    uint64_t t_ns;
    uint32_t n;
    unsigned char b[MAXBYTES];
} record_t;

static record_t ring[RING];
static uint64_t head, tail; /* written by the JACK thread / the main thread only */
static uint64_t overflowed;
static jack_client_t *client;
static jack_port_t *port;

static int ignored(const jack_midi_data_t *b, size_t n) {
    return n == 0 || b[0] == 0xF0 || b[0] == 0xF7 || b[0] == 0xF8 || b[0] == 0xF1 || b[0] == 0xFE
           || n > MAXBYTES;
}

static int process(jack_nframes_t nframes, void *arg) {
    (void)arg;
    frame_clock fc = frame_clock_now(client);
    void *buf = jack_port_get_buffer(port, nframes);
    uint32_t count = jack_midi_get_event_count(buf);
    uint64_t h = __atomic_load_n(&head, __ATOMIC_RELAXED);
    for (uint32_t i = 0; i < count; i++) {
        jack_midi_event_t ev;
        if (jack_midi_event_get(&ev, buf, i) != 0 || ignored(ev.buffer, ev.size))
            continue;
        if (h - __atomic_load_n(&tail, __ATOMIC_ACQUIRE) >= RING) {
            overflowed++;
            continue;
        }
        record_t *r = &ring[h % RING];
        r->t_ns = (uint64_t)((fc.start_s + ev.time * fc.frame_s) * 1e9 + 0.5);
        r->n = (uint32_t)ev.size;
        memcpy(r->b, ev.buffer, ev.size);
        h++;
    }
    __atomic_store_n(&head, h, __ATOMIC_RELEASE);
    return 0;
}

static void drain(void) {
    uint64_t h = __atomic_load_n(&head, __ATOMIC_ACQUIRE);
    for (; tail < h; __atomic_store_n(&tail, tail + 1, __ATOMIC_RELEASE)) {
        record_t *r = &ring[tail % RING];
        printf("%llu.%09llu", (unsigned long long)(r->t_ns / 1000000000u),
               (unsigned long long)(r->t_ns % 1000000000u));
        for (uint32_t k = 0; k < r->n; k++)
            printf(" %u", r->b[k]);
        putchar('\n');
    }
    fflush(stdout);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: jack_recorder CLIENT_NAME\n");
        return 2;
    }
    int status = 0;
    client = jack_client_open(argv[1], JackNoStartServer | JackUseExactName, &status);
    if (!client) {
        fprintf(stderr, "jack_recorder: cannot open JACK client %s (status 0x%x)\n", argv[1], status);
        return 1;
    }
    port = jack_port_register(client, "in", JACK_DEFAULT_MIDI_TYPE, JackPortIsInput, 0);
    if (!port || jack_set_process_callback(client, process, NULL) != 0 || jack_activate(client) != 0) {
        fprintf(stderr, "jack_recorder: cannot register %s:in\n", argv[1]);
        jack_client_close(client);
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    struct pollfd in = {.fd = 0, .events = POLLIN};
    char scratch[256];
    for (;;) { /* print every 5 ms; stdin closed (EOF) or hung up ends the recording */
        int ready = poll(&in, 1, 5);
        drain();
        if (ready > 0 && (read(0, scratch, sizeof scratch) <= 0))
            break;
    }
    jack_deactivate(client);
    drain();
    if (overflowed)
        fprintf(stderr, "jack_recorder: %llu messages lost (ring full)\n", (unsigned long long)overflowed);
    jack_client_close(client);
    return 0;
}
