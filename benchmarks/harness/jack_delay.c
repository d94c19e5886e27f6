/* A JACK MIDI delay for the harness (the calibration test): every event arriving on
 * CLIENT_NAME:in leaves CLIENT_NAME:out exactly FRAMES frames later on JACK's frame clock, so a
 * loopback through it is longer than a direct one by FRAMES / rate seconds, known exactly.
 * Same shape as jack_recorder.c: no JACK headers (the few declarations are below), links
 * libjack.so.0, exits when stdin closes.
 *
 *   jack_delay CLIENT_NAME FRAMES
 */
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../improv/native/jack_api.h"

#define RING 4096
#define MAXBYTES 16

typedef struct {
    jack_nframes_t due; /* frame time to leave at */
    uint32_t n;
    unsigned char b[MAXBYTES];
} held_t;

static held_t ring[RING];
static uint32_t head, tail; /* both touched by the process thread only */
static jack_client_t *client;
static jack_port_t *in_port, *out_port;
static jack_nframes_t delay;

static int process(jack_nframes_t nframes, void *arg) {
    (void)arg;
    jack_nframes_t start = jack_last_frame_time(client);
    void *in = jack_port_get_buffer(in_port, nframes);
    void *out = jack_port_get_buffer(out_port, nframes);
    uint32_t count = jack_midi_get_event_count(in);
    for (uint32_t i = 0; i < count; i++) {
        jack_midi_event_t ev;
        if (jack_midi_event_get(&ev, in, i) != 0 || ev.size > MAXBYTES || head - tail >= RING)
            continue;
        held_t *h = &ring[head++ % RING];
        h->due = start + ev.time + delay;
        h->n = (uint32_t)ev.size;
        memcpy(h->b, ev.buffer, ev.size);
    }
    jack_midi_clear_buffer(out);
    while (tail != head && (int32_t)(ring[tail % RING].due - (start + nframes)) < 0) {
        held_t *h = &ring[tail++ % RING];
        int32_t offset = (int32_t)(h->due - start);
        jack_midi_event_write(out, offset < 0 ? 0 : (jack_nframes_t)offset, h->b, h->n);
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: jack_delay CLIENT_NAME FRAMES\n");
        return 2;
    }
    delay = (jack_nframes_t)strtoul(argv[2], NULL, 10);
    int status = 0;
    client = jack_client_open(argv[1], JackNoStartServer | JackUseExactName, &status);
    if (!client) {
        fprintf(stderr, "jack_delay: cannot open JACK client %s (status 0x%x)\n", argv[1], status);
        return 1;
    }
    in_port = jack_port_register(client, "in", JACK_DEFAULT_MIDI_TYPE, JackPortIsInput, 0);
    out_port = jack_port_register(client, "out", JACK_DEFAULT_MIDI_TYPE, JackPortIsOutput, 0);
    if (!in_port || !out_port || jack_set_process_callback(client, process, NULL) != 0
        || jack_activate(client) != 0) {
        fprintf(stderr, "jack_delay: cannot register %s:in and :out\n", argv[1]);
        jack_client_close(client);
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    char scratch[256];
    while (read(0, scratch, sizeof scratch) > 0) {
    }
    jack_deactivate(client);
    jack_client_close(client);
    return 0;
}
