/* The libjack declarations improv's C clients use (jack_midi.c here, and the benchmarks' harness
 * clients in benchmarks/harness/), written out so that they build against libjack.so.0 alone
 * (jackd2's runtime package, no -dev headers). Signatures as in jack/jack.h, jack/midiport.h and
 * jack/ringbuffer.h. */
#ifndef IMPROV_JACK_API_H
#define IMPROV_JACK_API_H
#include <stddef.h>
#include <stdint.h>

typedef struct _jack_client jack_client_t;
typedef struct _jack_port jack_port_t;
typedef struct _jack_ringbuffer jack_ringbuffer_t; /* used through its functions only */
typedef uint32_t jack_nframes_t;
typedef unsigned char jack_midi_data_t;
typedef struct {
    jack_nframes_t time;
    size_t size;
    jack_midi_data_t *buffer;
} jack_midi_event_t;
typedef int (*JackProcessCallback)(jack_nframes_t nframes, void *arg);
typedef void (*JackShutdownCallback)(void *arg);

enum { JackNoStartServer = 0x01, JackUseExactName = 0x02 };
enum { JackPortIsInput = 0x1, JackPortIsOutput = 0x2 };
#define JACK_DEFAULT_MIDI_TYPE "8 bit raw midi"

jack_client_t *jack_client_open(const char *name, int options, int *status, ...);
int jack_client_close(jack_client_t *);
int jack_activate(jack_client_t *);
int jack_deactivate(jack_client_t *);
char *jack_get_client_name(jack_client_t *);
int jack_set_process_callback(jack_client_t *, JackProcessCallback, void *arg);
void jack_on_shutdown(jack_client_t *, JackShutdownCallback, void *arg);
jack_port_t *jack_port_register(jack_client_t *, const char *name, const char *type,
                                unsigned long flags, unsigned long buffer_size);
const char *jack_port_name(const jack_port_t *);
void *jack_port_get_buffer(jack_port_t *, jack_nframes_t);
jack_nframes_t jack_last_frame_time(const jack_client_t *);
jack_nframes_t jack_get_sample_rate(jack_client_t *);
jack_nframes_t jack_get_buffer_size(jack_client_t *);
int jack_is_realtime(jack_client_t *);
int jack_connect(jack_client_t *, const char *source, const char *destination);
int jack_port_disconnect(jack_client_t *, jack_port_t *);
const char **jack_get_ports(jack_client_t *, const char *name_pattern, const char *type_pattern,
                            unsigned long flags);
void jack_free(void *);

uint32_t jack_midi_get_event_count(void *port_buffer);
int jack_midi_event_get(jack_midi_event_t *event, void *port_buffer, uint32_t index);
void jack_midi_clear_buffer(void *port_buffer);
int jack_midi_event_write(void *port_buffer, jack_nframes_t time, const jack_midi_data_t *data,
                          size_t data_size);

jack_ringbuffer_t *jack_ringbuffer_create(size_t size);
void jack_ringbuffer_free(jack_ringbuffer_t *);
size_t jack_ringbuffer_read_space(const jack_ringbuffer_t *);
size_t jack_ringbuffer_write_space(const jack_ringbuffer_t *);
size_t jack_ringbuffer_read(jack_ringbuffer_t *, char *dest, size_t count);
size_t jack_ringbuffer_peek(jack_ringbuffer_t *, char *dest, size_t count);
void jack_ringbuffer_read_advance(jack_ringbuffer_t *, size_t count);
size_t jack_ringbuffer_write(jack_ringbuffer_t *, const char *src, size_t count);

#endif
