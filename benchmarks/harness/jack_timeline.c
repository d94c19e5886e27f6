/* A JACK client that compares each process callback's start with JACK's own timeline for the
 * cycle (jack_get_cycle_times: the cycle's start from the server's delay-locked loop, on libjack's
 * CLOCK_MONOTONIC_RAW, moved onto CLOCK_MONOTONIC), for benchmarks/profiles/jack_timeline.py:
 * why improv's clients take frame 0's time from the callback (improv/native/jack_frames.h).
 *
 *   jack_timeline SECONDS   (prints one line per cycle, "<callback - cycle start, ms>", then exits)
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "../../improv/native/jack_api.h"
#include "../../improv/native/jack_frames.h"

typedef uint64_t jack_time_t;
int jack_get_cycle_times(const jack_client_t *, jack_nframes_t *current_frames, jack_time_t *current_usecs,
                         jack_time_t *next_usecs, float *period_usecs);
jack_time_t jack_get_time(void);

#define MAX_CYCLES 400000

static jack_client_t *client;
static double late_s[MAX_CYCLES];
static volatile int cycles;

static int process(jack_nframes_t nframes, void *arg) {
    (void)nframes, (void)arg;
    double now_s = monotonic_s();
    double jack_s = (double)jack_get_time() * 1e-6;
    double after_s = monotonic_s();
    jack_nframes_t frames;
    jack_time_t current_us, next_us;
    float period_us;
    if (cycles >= MAX_CYCLES || jack_get_cycle_times(client, &frames, &current_us, &next_us, &period_us) != 0)
        return 0;
    double start_s = (double)current_us * 1e-6 + ((now_s + after_s) / 2 - jack_s);
    late_s[cycles] = now_s - start_s;
    cycles++;
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: jack_timeline SECONDS\n");
        return 2;
    }
    int status = 0;
    client = jack_client_open("timeline", JackNoStartServer, &status);
    if (!client || jack_set_process_callback(client, process, NULL) != 0 || jack_activate(client) != 0) {
        fprintf(stderr, "jack_timeline: cannot open a JACK client (status 0x%x)\n", status);
        return 1;
    }
    sleep((unsigned)atoi(argv[1]));
    jack_deactivate(client);
    for (int i = 0; i < cycles; i++)
        printf("%.4f\n", late_s[i] * 1e3);
    jack_client_close(client);
    return 0;
}
