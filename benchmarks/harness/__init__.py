"""The real-port harness that `improv bench`, the soak, the profiles and the tests share: a private
jackd (`jackd`), `improv run` as a subprocess (`improv_process`), a player, a recorder and a MIDI
clock on JACK (`clients`, with the C recorder `jack_recorder.c`), and what went over a port as notes
(`notes`).
"""
