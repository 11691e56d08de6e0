"""The protocol layer on its own: encode events, decode them from arbitrary chunks."""

from sseproto import Decoder, Event, encode_comment

wire = (
    Event("hello", id="1").encode()
    + encode_comment("heartbeat")
    + Event('{"progress": 40}', event="job", id="2", retry=2000).encode()
    + Event("line one\nline two").encode()
)
print("on the wire:")
print(wire.decode())

decoder = Decoder(on_comment=lambda text: print("comment:", text))
for i in range(0, len(wire), 7):  # any chunking gives the same events
    for event in decoder.feed(wire[i : i + 7]):
        print(f"{event.event:8} id={event.id!r:5} data={event.data!r}")
print("Last-Event-ID to send on reconnect:", decoder.last_event_id, "| retry:", decoder.retry, "ms")
