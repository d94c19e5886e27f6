/* The few libjack declarations the harness's C clients use, written out so that they build
 * against libjack.so.0 alone (no -dev headers): jack_recorder.c and jack_delay.c. */
#ifndef IMPROV_JACK_MIN_H
#define IMPROV_JACK_MIN_H
#include <stddef.h>
#include <stdint.h>

typedef struct _jack_client jack_client_t;
typedef struct _jack_port jack_port_t;
typedef uint32_t jack_nframes_t;
typedef unsigned char jack_midi_data_t;
typedef struct {
    jack_nframes_t time;
    size_t size;
    jack_midi_data_t *buffer;
} jack_midi_event_t;
typedef int (*JackProcessCallback)(jack_nframes_t nframes, void *arg);

extern jack_client_t *jack_client_open(const char *name, int options, int *status, ...);
extern jack_port_t *jack_port_register(jack_client_t *, const char *name, const char *type,
                                       unsigned long flags, unsigned long buffer_size);
extern int jack_set_process_callback(jack_client_t *, JackProcessCallback, void *arg);
extern int jack_activate(jack_client_t *);
extern int jack_deactivate(jack_client_t *);
extern int jack_client_close(jack_client_t *);
extern void *jack_port_get_buffer(jack_port_t *, jack_nframes_t);
extern uint32_t jack_midi_get_event_count(void *port_buffer);
extern int jack_midi_event_get(jack_midi_event_t *event, void *port_buffer, uint32_t index);
extern jack_nframes_t jack_last_frame_time(const jack_client_t *);
extern void jack_midi_clear_buffer(void *port_buffer);
extern int jack_midi_event_write(void *port_buffer, jack_nframes_t time, const jack_midi_data_t *data,
                                 size_t data_size);

enum { JackNoStartServer = 0x01, JackUseExactName = 0x02, JackPortIsInput = 0x1, JackPortIsOutput = 0x2 };
#define MIDI_TYPE "8 bit raw midi"

#endif
