/* Short-lived JACK clients, one after another until stdin closes: open "churn", close it again
 * (with "activate": register a MIDI port and activate it first; a second argument: hold each
 * client open that many milliseconds before closing it). What a patchbay or a script that
 * polls jack_lsp does to a server, as fast as the server answers: issue 13's stall needs clients
 * coming and going while improv opens its own (docs/LIVE.md). Prints the count to stderr at the end.
 * With "once [DELAY_US]": one client "foreign", "ready" on stdout once it is open, closed DELAY_US
 * after stdin closes, then "closed": a client that goes away at a moment the caller picks, on its
 * own clock (the caller's Python may be holding the GIL inside an rtmidi open meanwhile). */
#include "../../improv/native/jack_api.h"
#include <fcntl.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int process(jack_nframes_t nframes, void *arg) { (void)nframes; (void)arg; return 0; }

static int once(int delay_us) {
    char c;
    jack_client_t *client = jack_client_open("foreign", JackNoStartServer, NULL);
    if (client == NULL)
        return 1;
    printf("ready\n");
    fflush(stdout);
    while (read(0, &c, 1) > 0) {
    }
    if (delay_us > 0)
        usleep(delay_us);
    jack_client_close(client);
    printf("closed\n");
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "once") == 0)
        return once(argc > 2 ? atoi(argv[2]) : 0);
    int activate = argc > 1 && strcmp(argv[1], "activate") == 0;
    int hold_ms = argc > 2 ? atoi(argv[2]) : 0;
    long clients = 0;
    char c;
    fcntl(0, F_SETFL, O_NONBLOCK);
    while (read(0, &c, 1) != 0) {  /* 0: stdin closed (EAGAIN: still open) */
        jack_client_t *client = jack_client_open("churn", JackNoStartServer, NULL);
        if (client == NULL) {
            usleep(10000);
            continue;
        }
        if (activate) {
            jack_port_register(client, "in", JACK_DEFAULT_MIDI_TYPE, JackPortIsInput, 0);
            jack_set_process_callback(client, process, NULL);
            jack_activate(client);
        }
        if (hold_ms > 0)
            usleep(1000 * hold_ms);
        jack_client_close(client);
        clients++;
    }
    fprintf(stderr, "churn: %ld clients\n", clients);
    return 0;
}
