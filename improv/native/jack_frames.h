/* Frame times on CLOCK_MONOTONIC (Python's time.perf_counter), for improv's JACK clients and the
 * harness's: frame k of the current cycle is at `start_s + k * frame_s`, where `start_s` is when
 * this client's process callback began and `frame_s` one frame at the server's rate. Every client
 * stamping and writing by this is sample-accurate against the others on the server, up to how far
 * apart their callbacks run in one cycle (microseconds: the graph runs them one after another).
 *
 * Not JACK's own timeline (jack_get_cycle_times, its delay-locked loop): on this machine's dummy
 * driver the loop's cycle start was more than half a millisecond from the callbacks' wake-up in 38 %
 * of the cycles at 32 frames (up to 20 ms after a stall, converging over a second or more), so
 * a note planned in one cycle's mapping and written in another's landed milliseconds off
 * (docs/TIMING.md). A callback never runs before its cycle starts, so its own time is a bound that
 * never drifts. Call from a process callback. */
#ifndef IMPROV_JACK_FRAMES_H
#define IMPROV_JACK_FRAMES_H
#include <time.h>

#include "jack_api.h"

typedef struct {
    double start_s; /* frame 0 of this cycle */
    double frame_s; /* one frame */
} frame_clock;

static inline double monotonic_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static inline frame_clock frame_clock_now(jack_client_t *client) {
    jack_nframes_t rate = jack_get_sample_rate(client);
    frame_clock fc = {monotonic_s(), 1.0 / (rate > 0 ? rate : 48000)};
    return fc;
}

/* The frame of this cycle nearest time `t_s`: 0 for a time already past, `nframes` (not in this
 * cycle) for one nearer the next cycle's start. */
static inline jack_nframes_t frame_of(frame_clock fc, double t_s, jack_nframes_t nframes) {
    double k = (t_s - fc.start_s) / fc.frame_s + 0.5;
    if (!(k > 0)) return 0;
    if (k >= nframes) return nframes;
    return (jack_nframes_t)k;
}
/* Add message `index`, written at `frame`, to this cycle's list (`order`, `frames`: `n` long, by
 * frame and then as handed over, as jack_midi_event_write wants them); returns the new length. */
static inline uint32_t by_frame(uint32_t *order, uint32_t *frames, uint32_t n, uint32_t index, jack_nframes_t frame) {
    uint32_t k = n;
    for (; k > 0 && frames[k - 1] > frame; k--) {
        order[k] = order[k - 1];
        frames[k] = frames[k - 1];
    }
    order[k] = index;
    frames[k] = frame;
    return n + 1;
}
#endif
